"""coord's own gRPC server (:mod:`coord.rpc.h2.server`), seen from the outside.

Part A drives it with a real grpcio client (``grpc.aio``): every call shape, many calls at
once, messages far larger than a flow-control window, errors and their exact status,
deadlines, cancellation, metadata and a graceful stop. Part B speaks raw HTTP/2 bytes to it
for what a grpcio client never sends: a bad preface, split header blocks, padding, a tiny
flow-control window, an oversized frame, a compressed message.

Every test runs its own event loop (``asyncio.run``, bounded by ``TEST_TIMEOUT``), listens
on 127.0.0.1 port 0 and stops its server in a ``finally``. Nothing sleeps to wait for a
condition: events and futures are awaited under a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import struct
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import grpc
import pytest

from coord.pb import rpc_pb2
from coord.rpc.h2 import hpack
from coord.rpc.h2.server import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    SETTINGS_INITIAL_WINDOW_SIZE,
    STREAM_WINDOW,
    WINDOW_UPDATE,
    CallDetails,
    H2Server,
    ServicerContext,
    frame,
    grpc_message,
)
from coord.rpc.status import StatusCode
from tests.api.h2_support import (
    LISTEN,
    TEST_TIMEOUT,
    WAIT,
    Held,
    ident,
    pattern,
    run,
    stream_stream,
    stream_unary,
    unary,
    unary_stream,
    within,
)

if TYPE_CHECKING:
    from tests.api.h2_support import Handler

MAX_RECEIVE = 4 << 20
CLIENT_OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
                  ("grpc.max_send_message_length", 64 << 20)]
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]

ECHO = "/test.S/Echo"
COUNT = "/test.S/Count"
SUM = "/test.S/Sum"
BIDI = "/test.S/Bidi"


async def echo(request: bytes, context: ServicerContext) -> bytes:
    return b"echo:" + request


async def count(request: bytes, context: ServicerContext) -> AsyncIterator[bytes]:
    for i in range(int(request)):
        yield b"%d" % i


async def total(requests: AsyncIterator[bytes], context: ServicerContext) -> bytes:
    return b"%d" % sum([int(r) async for r in requests])


async def bidi_echo(requests: AsyncIterator[bytes],
                    context: ServicerContext) -> AsyncIterator[bytes]:
    async for request in requests:
        yield b"echo:" + request


BASIC: dict[str, Handler] = {ECHO: unary(echo), COUNT: unary_stream(count),
                             SUM: stream_unary(total), BIDI: stream_stream(bidi_echo)}


@dataclass
class Served:
    server: H2Server
    port: int
    channel: grpc.aio.Channel
    seen: list[CallDetails] = field(default_factory=list)

    def unary(self, method: str) -> Any:
        return self.channel.unary_unary(method, request_serializer=ident,
                                        response_deserializer=ident)

    def unary_stream(self, method: str) -> Any:
        return self.channel.unary_stream(method, request_serializer=ident,
                                         response_deserializer=ident)

    def stream_unary(self, method: str) -> Any:
        return self.channel.stream_unary(method, request_serializer=ident,
                                         response_deserializer=ident)

    def stream_stream(self, method: str) -> Any:
        return self.channel.stream_stream(method, request_serializer=ident,
                                          response_deserializer=ident)


@contextlib.asynccontextmanager
async def serving(handlers: dict[str, Handler], max_receive: int = MAX_RECEIVE,
                  options: Iterable[tuple[str, Any]] = ()) -> AsyncIterator[Served]:
    """An H2Server on a free local port serving ``handlers``, and a grpcio channel to it."""
    seen: list[CallDetails] = []

    def resolve(details: CallDetails) -> Handler | None:
        seen.append(details)
        return handlers.get(details.method)

    server = H2Server(resolve, max_receive)
    port = await server.start(LISTEN)
    try:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                            options=[*CLIENT_OPTIONS, *options])
        try:
            yield Served(server, port, channel, seen)
        finally:
            await channel.close(None)
    finally:
        await server.stop(0)


async def failure(call: Any) -> grpc.aio.AioRpcError:
    """Await a call that must fail; its error."""
    try:
        await within(call)
    except grpc.aio.AioRpcError as err:
        return err
    raise AssertionError("the call succeeded")


async def read_all(call: Any) -> list[bytes]:
    """Read a stream's remaining messages with ``read()`` (grpc.aio does not let a call mix
    ``read``/``write`` with iteration)."""
    out = []
    while (message := await within(call.read())) is not EOF:
        out.append(bytes(message))
    return out


# -- A1: every call shape --------------------------------------------------------------


@pytest.mark.parametrize("uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_unary_call_echoes(uvloop: bool) -> None:
    async def body() -> bytes:
        async with serving(BASIC) as s:
            return bytes(await within(s.unary(ECHO)(b"hello")))

    assert run(body(), uvloop=uvloop) == b"echo:hello"


def test_unary_stream_call_yields_every_message_in_order() -> None:
    async def body() -> list[bytes]:
        async with serving(BASIC) as s:
            call = s.unary_stream(COUNT)(b"300", timeout=WAIT)
            got = [bytes(m) async for m in call]
            assert await call.code() == grpc.StatusCode.OK
            return got

    assert run(body()) == [b"%d" % i for i in range(300)]


def test_stream_unary_call_sums_the_client_messages() -> None:
    async def body() -> bytes:
        async with serving(BASIC) as s:
            return bytes(await within(s.stream_unary(SUM)(
                iter([b"%d" % i for i in range(1, 101)]))))

    assert run(body()) == b"5050"


def test_stream_stream_call_answers_each_message_before_the_next() -> None:
    async def body() -> None:
        async with serving(BASIC) as s:
            call = s.stream_stream(BIDI)(timeout=WAIT)
            for i in range(20):  # ping-pong: only true streaming can answer this
                await call.write(b"m%d" % i)
                assert await within(call.read()) == b"echo:m%d" % i
            await call.done_writing()
            assert await within(call.read()) is EOF
            assert await call.code() == grpc.StatusCode.OK

    run(body())


def test_server_keeps_sending_after_the_client_half_closes() -> None:
    async def tail(requests: AsyncIterator[bytes],
                   context: ServicerContext) -> AsyncIterator[bytes]:
        n = 0
        async for request in requests:
            n += 1
            yield b"echo:" + request
        for i in range(50):  # the client's END_STREAM has arrived: keep writing
            yield b"after %d of %d" % (i, n)

    async def body() -> list[bytes]:
        async with serving({BIDI: stream_stream(tail)}) as s:
            call = s.stream_stream(BIDI)(timeout=WAIT)
            await call.write(b"a")
            assert await within(call.read()) == b"echo:a"
            await call.write(b"b")
            assert await within(call.read()) == b"echo:b"
            await call.done_writing()
            rest = await read_all(call)
            assert await call.code() == grpc.StatusCode.OK
            return rest

    assert run(body()) == [b"after %d of 2" % i for i in range(50)]


def test_handlers_without_serializers_pass_bytes_through_as_in_grpcio() -> None:
    # grpc.*_rpc_method_handler's (de)serializers default to None: bytes as they are.
    handlers: dict[str, Handler] = {
        ECHO: grpc.unary_unary_rpc_method_handler(echo),
        COUNT: grpc.unary_stream_rpc_method_handler(count),
    }

    async def body() -> tuple[bytes, list[bytes]]:
        async with serving(handlers) as s:
            one = bytes(await within(s.unary(ECHO)(b"raw")))
            many = [bytes(m) async for m in s.unary_stream(COUNT)(b"3", timeout=WAIT)]
            return one, many

    assert run(body()) == (b"echo:raw", [b"0", b"1", b"2"])


# -- A2: concurrency -------------------------------------------------------------------


def test_200_concurrent_unary_calls_on_one_channel() -> None:
    n = 200
    arrived = 0
    all_in = asyncio.Event()

    async def barrier_echo(request: bytes, context: ServicerContext) -> bytes:
        nonlocal arrived
        arrived += 1
        if arrived == n:
            all_in.set()
        await all_in.wait()  # every call is open at the same time, or none answers
        return b"echo:" + request

    async def body() -> list[bytes]:
        async with serving({ECHO: unary(barrier_echo)}) as s:
            call = s.unary(ECHO)
            return list(await asyncio.gather(
                *(call(b"%d" % i, timeout=WAIT) for i in range(n))))

    assert run(body()) == [b"echo:%d" % i for i in range(n)]


# -- A3: large messages and flow control -----------------------------------------------


async def digest(request: bytes, context: ServicerContext) -> bytes:
    return hashlib.sha256(request).digest() + struct.pack(">I", len(request))


async def sized(request: bytes, context: ServicerContext) -> bytes:
    return pattern(int(request))


@pytest.mark.parametrize("uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_large_request_and_large_response(uvloop: bool) -> None:
    request = pattern(int(1.9 * (1 << 20)), seed=1)  # over the 1 MiB stream window

    async def body() -> tuple[bytes, bytes]:
        async with serving({ECHO: unary(digest), COUNT: unary(sized)}) as s:
            got = bytes(await within(s.unary(ECHO)(request)))
            big = bytes(await within(s.unary(COUNT)(b"%d" % (5 << 20))))
            return got, big

    got, big = run(body(), uvloop=uvloop)
    assert got == hashlib.sha256(request).digest() + struct.pack(">I", len(request))
    assert len(big) == 5 << 20
    assert big == pattern(5 << 20)


def test_a_client_stream_message_larger_than_the_stream_window() -> None:
    # A request-streaming call's messages may be as large as max_receive (production: 2 MiB)
    # even though the server announces a 1 MiB window per stream.
    big = pattern(1536 * 1024, seed=2)

    async def sizes(requests: AsyncIterator[bytes], context: ServicerContext) -> bytes:
        return b",".join([b"%d" % len(r) async for r in requests])

    async def body() -> bytes:
        async with serving({SUM: stream_unary(sizes)}, max_receive=2 << 20) as s:
            return bytes(await s.stream_unary(SUM)(iter([b"x", big, b"yz"]), timeout=2))

    assert run(body()) == b"1,%d,2" % len(big)


SMALL_WINDOW = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 65_535)]
"""A grpcio client whose stream window stays at 64 KiB (no BDP-driven growth)."""


def test_slow_reader_gets_a_long_stream_intact_and_in_order() -> None:
    n, size = 2000, 10 * 1024
    read = 0
    ahead = 0

    async def produce(request: bytes, context: ServicerContext) -> AsyncIterator[bytes]:
        nonlocal ahead
        for i in range(n):
            ahead = max(ahead, i - read)  # how far the server runs ahead of the reader
            yield struct.pack(">I", i) + bytes([i % 251]) * (size - 4)

    async def body() -> list[int]:
        nonlocal read
        async with serving({COUNT: unary_stream(produce)}, options=SMALL_WINDOW) as s:
            call = s.unary_stream(COUNT)(b"", timeout=WAIT * 2)
            order = []
            async for message in call:
                assert len(message) == size
                i = struct.unpack_from(">I", message)[0]
                assert message[4:] == bytes([i % 251]) * (size - 4)
                order.append(i)
                read += 1
                if read % 100 == 0:
                    await asyncio.sleep(0.002)  # a slow consumer, not a wait for a condition
            assert await call.code() == grpc.StatusCode.OK
            return order

    assert run(body()) == list(range(n))
    # The server produces only what the client's 64 KiB window lets it send (plus what
    # grpcio has taken in but not handed out yet), never the whole 20 MiB stream at once.
    assert ahead < 50, ahead


# -- A4: errors ------------------------------------------------------------------------


def test_abort_reaches_the_client_with_its_code_and_details() -> None:
    async def lease(request: bytes, context: ServicerContext) -> bytes:
        await context.abort(StatusCode.NOT_FOUND, "etcdserver: requested lease not found")

    async def body() -> grpc.aio.AioRpcError:
        async with serving({ECHO: unary(lease)}) as s:
            return await failure(s.unary(ECHO)(b"", timeout=WAIT))

    err = run(body())
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "etcdserver: requested lease not found"


def test_abort_from_a_streaming_handler_after_messages() -> None:
    async def partial(request: bytes, context: ServicerContext) -> AsyncIterator[bytes]:
        yield b"one"
        await context.abort(StatusCode.FAILED_PRECONDITION, "stop here")

    async def body() -> tuple[list[bytes], grpc.StatusCode, str]:
        async with serving({COUNT: unary_stream(partial)}) as s:
            call = s.unary_stream(COUNT)(b"", timeout=WAIT)
            got = [bytes(await within(call.read()))]
            err = await failure(call.read())
            return got, err.code(), err.details() or ""

    assert run(body()) == ([b"one"], grpc.StatusCode.FAILED_PRECONDITION, "stop here")


@pytest.mark.parametrize("details", [
    "100% sure: ключ «é» не найден ✓",
    "%41 is not A, %%, %zz, trailing %",
    "tab\tnewline\ncontrol\x01 del\x7f",
])
def test_details_round_trip_through_percent_encoding(details: str) -> None:
    async def fail(request: bytes, context: ServicerContext) -> bytes:
        await context.abort(StatusCode.INVALID_ARGUMENT, details)

    async def body() -> grpc.aio.AioRpcError:
        async with serving({ECHO: unary(fail)}) as s:
            return await failure(s.unary(ECHO)(b"", timeout=WAIT))

    err = run(body())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == details


def test_a_handler_exception_is_unknown_and_the_server_keeps_serving() -> None:
    async def broken(request: bytes, context: ServicerContext) -> bytes:
        raise ValueError("boom")

    async def body() -> tuple[grpc.aio.AioRpcError, bytes]:
        async with serving({ECHO: unary(echo), SUM: unary(broken)}) as s:
            err = await failure(s.unary(SUM)(b"", timeout=WAIT))
            return err, bytes(await within(s.unary(ECHO)(b"after")))

    err, after = run(body())
    assert err.code() == grpc.StatusCode.UNKNOWN
    assert "boom" in (err.details() or "")
    assert after == b"echo:after"


def test_an_unknown_method_is_unimplemented() -> None:
    async def body() -> list[grpc.StatusCode]:
        async with serving(BASIC) as s:
            codes = [(await failure(s.unary("/test.S/Nope")(b"", timeout=WAIT))).code()]
            call = s.unary_stream("/test.Other/Nope")(b"", timeout=WAIT)
            codes.append((await failure(call.read())).code())
            return codes

    assert run(body()) == [grpc.StatusCode.UNIMPLEMENTED] * 2


@pytest.mark.parametrize(("limit", "size"), [
    (1000, 1001),  # the whole message arrives in one DATA frame
    (64 * 1024, 100 * 1024),  # the message spans DATA frames
    (2 << 20, (2 << 20) + 1),  # coord's own limit, over the stream window
])
def test_a_request_over_max_receive_is_resource_exhausted(limit: int, size: int) -> None:
    async def body() -> tuple[grpc.aio.AioRpcError, bytes]:
        async with serving(BASIC, max_receive=limit) as s:
            err = await failure(s.unary(ECHO)(b"x" * size, timeout=WAIT))
            return err, bytes(await within(s.unary(ECHO)(b"ok")))

    err, after = run(body())
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.details() == f"grpc: received message larger than max ({size} vs. {limit})"
    assert after == b"echo:ok"


def test_a_request_over_max_receive_in_a_client_stream() -> None:
    async def body() -> grpc.aio.AioRpcError:
        async with serving(BASIC, max_receive=1000) as s:
            return await failure(s.stream_unary(SUM)(iter([b"1", b"2" * 1001]),
                                                     timeout=WAIT))

    err = run(body())
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.details() == "grpc: received message larger than max (1001 vs. 1000)"


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "client-stream"])
def test_a_request_that_is_not_protobuf_is_internal(streaming: bool) -> None:
    async def put(request: rpc_pb2.PutRequest, context: ServicerContext) -> bytes:
        return request.key

    async def puts(requests: AsyncIterator[rpc_pb2.PutRequest],
                   context: ServicerContext) -> bytes:
        return b"".join([r.key async for r in requests])

    bad = b"\x0a\x05ab"  # field 1 claims 5 bytes, 2 follow

    async def body() -> tuple[grpc.aio.AioRpcError, bytes]:
        handlers = {ECHO: unary(put, rpc_pb2.PutRequest.FromString),
                    SUM: stream_unary(puts, rpc_pb2.PutRequest.FromString)}
        async with serving(handlers) as s:
            if streaming:
                err = await failure(s.stream_unary(SUM)(iter([bad]), timeout=WAIT))
            else:
                err = await failure(s.unary(ECHO)(bad, timeout=WAIT))
            good = rpc_pb2.PutRequest(key=b"k").SerializeToString()
            return err, bytes(await within(s.unary(ECHO)(good)))

    err, after = run(body())
    assert err.code() == grpc.StatusCode.INTERNAL
    assert after == b"k"


# -- A5: deadlines ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["unary", "unary_stream", "stream_stream"])
def test_a_deadline_fails_the_call_and_cancels_the_handler(shape: str) -> None:
    held = Held()
    started, cancelled = held.started, held.ended
    remaining: list[float | None] = []

    async def wait_forever(context: ServicerContext) -> None:
        remaining.append(context.time_remaining())
        await held.hold()

    async def forever(request: bytes, context: ServicerContext) -> bytes:
        await wait_forever(context)
        return b""

    async def forever_stream(request: Any, context: ServicerContext) -> AsyncIterator[bytes]:
        yield b"first"
        await wait_forever(context)

    handlers = {ECHO: unary(forever), COUNT: unary_stream(forever_stream),
                BIDI: stream_stream(forever_stream)}

    async def body() -> grpc.aio.AioRpcError:
        async with serving(handlers) as s:
            if shape == "unary":
                err = await failure(s.unary(ECHO)(b"", timeout=0.2))
            else:
                call = (s.unary_stream(COUNT)(b"", timeout=0.2) if shape == "unary_stream"
                        else s.stream_stream(BIDI)(iter([b"x"]), timeout=0.2))
                assert await within(call.read()) == b"first"
                err = await failure(call.read())
            await within(started.wait())
            await within(cancelled.wait())
            return err

    assert run(body()).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # grpc C-core rounds the grpc-timeout it sends up to its unit: allow a little over
    assert remaining and remaining[0] is not None and 0 < remaining[0] <= 0.25


def test_no_deadline_means_no_time_limit() -> None:
    async def remaining(request: bytes, context: ServicerContext) -> bytes:
        return repr(context.time_remaining()).encode()

    async def body() -> bytes:
        async with serving({ECHO: unary(remaining)}) as s:
            return bytes(await within(s.unary(ECHO)(b"")))

    assert run(body()) == b"None"


# -- A6: cancellation ------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["unary", "unary_stream", "stream_stream"])
def test_a_cancelled_call_cancels_its_handler_and_the_channel_keeps_working(
        shape: str) -> None:
    held = Held()
    started, ended = held.started, held.ended

    async def forever(request: bytes, context: ServicerContext) -> bytes:
        await held.hold()
        return b""

    async def ticks(request: Any, context: ServicerContext) -> AsyncIterator[bytes]:
        try:
            for i in range(10):
                yield b"tick %d" % i
            started.set()
            await asyncio.get_running_loop().create_future()
        finally:  # GeneratorExit or CancelledError: either way the generator is told
            ended.set()

    handlers = {**BASIC, "/test.S/Forever": unary(forever),
                "/test.S/Ticks": unary_stream(ticks), "/test.S/BidiTicks": stream_stream(ticks)}

    async def body() -> tuple[grpc.StatusCode, bytes]:
        async with serving(handlers) as s:
            call: Any
            if shape == "unary":
                call = s.unary("/test.S/Forever")(b"", timeout=WAIT)
            elif shape == "unary_stream":
                call = s.unary_stream("/test.S/Ticks")(b"", timeout=WAIT)
            else:
                call = s.stream_stream("/test.S/BidiTicks")(timeout=WAIT)
                await call.write(b"go")
            if shape != "unary":
                assert await within(call.read()) == b"tick 0"
            await within(started.wait())
            assert call.cancel()
            await within(ended.wait())
            code = await within(call.code())
            return code, bytes(await within(s.unary(ECHO)(b"next")))

    assert run(body()) == (grpc.StatusCode.CANCELLED, b"echo:next")


# -- A7: metadata and call details -----------------------------------------------------


def test_invocation_metadata_peer_and_call_details() -> None:
    binary = bytes(range(256))
    captured: list[tuple[tuple[str, str | bytes], ...]] = []
    peers: list[str] = []

    async def meta(request: bytes, context: ServicerContext) -> bytes:
        captured.append(context.invocation_metadata())
        peers.append(context.peer())
        return b"ok"

    async def body() -> list[CallDetails]:
        async with serving({"/test.S/Meta": unary(meta)}) as s:
            metadata = (("x-custom", "hello world"), ("x-token-bin", binary),
                        ("hasleader", "true"))
            assert await within(s.unary("/test.S/Meta")(b"", metadata=metadata)) == b"ok"
            return s.seen

    seen = run(body())
    md = captured[0]
    assert ("x-custom", "hello world") in md
    assert ("x-token-bin", binary) in md
    assert ("hasleader", "true") in md
    assert not any(key.startswith(":") or key.startswith("grpc-") for key, _ in md)
    assert peers[0].startswith("ipv4:127.0.0.1:")
    (details,) = seen
    assert details.method == "/test.S/Meta"
    assert ("x-custom", "hello world") in details.invocation_metadata
    assert ("x-token-bin", binary) in details.invocation_metadata


# -- A8: graceful stop -----------------------------------------------------------------


async def refused(port: int) -> bool:
    try:
        _, writer = await within(asyncio.open_connection("127.0.0.1", port))
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


def test_stop_lets_calls_finish_within_grace_then_cancels_the_rest() -> None:
    grace = 1.0
    unary_started = asyncio.Event()
    release = asyncio.Event()
    stream_ended = asyncio.Event()

    async def slow(request: bytes, context: ServicerContext) -> bytes:
        unary_started.set()
        await release.wait()
        return b"finished"

    async def endless(request: bytes, context: ServicerContext) -> AsyncIterator[bytes]:
        try:
            yield b"tick"
            await asyncio.get_running_loop().create_future()
        finally:
            stream_ended.set()

    async def body() -> None:
        loop = asyncio.get_running_loop()
        async with serving({ECHO: unary(slow), COUNT: unary_stream(endless)}) as s:
            unary_call = s.unary(ECHO)(b"", timeout=WAIT)
            stream_call = s.unary_stream(COUNT)(b"", timeout=WAIT)
            assert await within(stream_call.read()) == b"tick"
            await within(unary_started.wait())

            begun = loop.time()
            stop = asyncio.create_task(s.server.stop(grace))
            await asyncio.sleep(0)  # let stop() run up to its first await
            assert await refused(s.port)  # no new connections once stopping
            release.set()
            assert await within(unary_call) == b"finished"  # done within grace
            assert not stream_ended.is_set()
            await within(stop, grace + WAIT)
            assert loop.time() - begun >= grace * 0.9  # the open stream had its grace
            await within(stream_ended.wait())
            err = await failure(stream_call.read())
            assert err.code() == grpc.StatusCode.UNAVAILABLE  # as grpc.aio.server's stop
            assert await refused(s.port)

    run(body())


def test_stop_without_open_calls_returns_at_once_and_refuses_connections() -> None:
    async def body() -> None:
        async with serving(BASIC) as s:
            assert await within(s.unary(ECHO)(b"x")) == b"echo:x"
            begun = time.monotonic()
            await within(s.server.stop(30))
            assert time.monotonic() - begun < 1.0
            assert await refused(s.port)

    run(body())


# -- B: raw HTTP/2 ---------------------------------------------------------------------


class Frame(NamedTuple):
    kind: int
    flags: int
    stream: int
    payload: bytes


@dataclass
class Response:
    headers: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    data: bytes = b""
    data_frames: list[int] = field(default_factory=list)
    reset: int | None = None

    def status(self) -> bytes | None:
        for block in self.headers:
            for name, value in block:
                if name == b"grpc-status":
                    return value
        return None


class RawClient:
    """A bare HTTP/2 client: writes the frames it is given, reads and decodes frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = hpack.Decoder()
        self.other: list[Frame] = []

    def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))

    async def read_frame(self) -> Frame:
        async with asyncio.timeout(WAIT):
            head = await self.reader.readexactly(9)
            length = int.from_bytes(head[:3], "big")
            payload = await self.reader.readexactly(length)
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        return Frame(head[3], head[4], stream, payload)

    async def until(self, kind: int, flags: int = 0) -> Frame:
        """The next frame of ``kind`` with all of ``flags`` set; others are kept aside."""
        while True:
            got = await self.read_frame()
            if got.kind == kind and got.flags & flags == flags:
                return got
            self.other.append(got)

    async def response(self, stream_id: int) -> Response:
        """Read a stream's response up to its END_STREAM (or RST_STREAM)."""
        out = Response()
        while True:
            got = await self.read_frame()
            if got.stream != stream_id:
                self.other.append(got)
                continue
            if got.kind == HEADERS:
                assert got.flags & END_HEADERS
                out.headers.append(self.decoder.decode(got.payload))
            elif got.kind == DATA:
                out.data += got.payload
                out.data_frames.append(len(got.payload))
            elif got.kind == RST_STREAM:
                out.reset = int.from_bytes(got.payload, "big")
                return out
            else:
                self.other.append(got)
            if got.flags & END_STREAM:
                return out

    async def eof(self) -> bytes:
        """Everything until the server closes the connection."""
        async with asyncio.timeout(WAIT):
            return await self.reader.read()

    def close(self) -> None:
        self.writer.close()


@contextlib.asynccontextmanager
async def raw(handlers: dict[str, Handler] = BASIC, *, preface: bool = True,
              max_receive: int = MAX_RECEIVE) -> AsyncIterator[tuple[RawClient, Served]]:
    async with serving(handlers, max_receive) as s:
        reader, writer = await within(asyncio.open_connection("127.0.0.1", s.port))
        client = RawClient(reader, writer)
        try:
            if preface:
                client.send(PREFACE, frame(SETTINGS, 0, 0))
            yield client, s
        finally:
            client.close()


def request_block(path: bytes = ECHO.encode(),
                  extra: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    fields = [(b":authority", b"127.0.0.1"), (b":path", path),
              (b"content-type", b"application/grpc"), (b"te", b"trailers"), *extra]
    return (hpack.encode_indexed(3)  # :method POST
            + hpack.encode_indexed(6)  # :scheme http
            + b"".join(hpack.encode_literal(n, v) for n, v in fields))


def huffman_literal(name: bytes, value: bytes) -> bytes:
    coded = hpack.huffman_encode(value)
    return b"\x00" + hpack.encode_int(len(name), 7) + name + hpack.encode_int(
        len(coded), 7, 0x80) + coded


def test_garbage_instead_of_the_preface_closes_only_that_connection() -> None:
    async def body() -> None:
        async with raw(preface=False) as (client, s):
            client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            received = await client.eof()
            assert received[3] == SETTINGS  # what the server said first
            assert await within(s.unary(ECHO)(b"still here")) == b"echo:still here"

    run(body())


def test_settings_first_then_acks_for_settings_and_ping() -> None:
    async def body() -> None:
        async with raw(preface=False) as (client, _):
            client.send(PREFACE)
            first = await client.read_frame()
            assert (first.kind, first.flags & ACK, first.stream) == (SETTINGS, 0, 0)
            client.send(frame(SETTINGS, 0, 0, struct.pack(">HI", 3, 100)))
            ack = await client.until(SETTINGS, ACK)
            assert ack.payload == b""
            client.send(frame(PING, 0, 0, b"8 bytes!"))
            pong = await client.until(PING, ACK)
            assert (pong.stream, pong.payload) == (0, b"8 bytes!")
            client.send(frame(PING, ACK, 0, b"unasked!"))  # an ACK is not answered
            client.send(frame(PING, 0, 0, b"\x00\x01\x02\x03\x04\x05\x06\x07"))
            pong = await client.until(PING, ACK)
            assert pong.payload == b"\x00\x01\x02\x03\x04\x05\x06\x07"

    run(body())


@pytest.mark.parametrize("headers_flags", [0, PADDED | PRIORITY_FLAG],
                         ids=["plain-headers", "padded-priority-headers"])
def test_split_header_block_and_padded_data_are_served(headers_flags: int) -> None:
    async def body() -> Response:
        async with raw() as (client, _):
            block = request_block(extra=[]) + huffman_literal(b"x-note", b"huffman coded")
            a, b = len(block) // 3, 2 * len(block) // 3
            padding = 7
            first = block[:a]
            if headers_flags & PRIORITY_FLAG:  # dependency on stream 0, weight 16
                first = struct.pack(">IB", 0, 15) + first
            if headers_flags & PADDED:
                first = bytes([3]) + first + b"\x00" * 3
            message = grpc_message(b"padded")
            client.send(
                frame(HEADERS, headers_flags, 1, first),
                frame(CONTINUATION, 0, 1, block[a:b]),
                frame(CONTINUATION, END_HEADERS, 1, block[b:]),
                frame(DATA, PADDED | END_STREAM, 1,
                      bytes([padding]) + message + b"\x00" * padding))
            return await client.response(1)

    response = run(body())
    assert response.reset is None
    assert len(response.headers) == 2
    assert (b":status", b"200") in response.headers[0]
    assert (b"content-type", b"application/grpc") in response.headers[0]
    assert response.data == grpc_message(b"echo:padded")
    assert response.headers[1] == [(b"grpc-status", b"0")]


def test_a_small_client_window_is_respected_until_window_update() -> None:
    async def body() -> tuple[int, Response]:
        async with raw({ECHO: unary(sized)}) as (client, _):
            client.send(frame(SETTINGS, 0, 0, struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE,
                                                          100)),
                        frame(HEADERS, END_HEADERS, 1, request_block()),
                        frame(DATA, END_STREAM, 1, grpc_message(b"1000")))
            sent = 0
            while sent < 100:
                got = await client.read_frame()
                if got.stream == 1 and got.kind == DATA:
                    sent += len(got.payload)
                assert not (got.stream == 1 and got.flags & END_STREAM)
            # A PING answered means the server has seen everything before it; no more DATA
            # may come before it as the window is used up.
            client.send(frame(PING, 0, 0, b"barrier!"))
            while True:
                got = await client.read_frame()
                if got.kind == PING and got.flags & ACK:
                    break
                assert not (got.stream == 1 and got.kind == DATA), "DATA beyond the window"
            client.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 10_000)))
            return sent, await client.response(1)

    sent, rest = run(body())
    assert sent == 100
    assert sent + len(rest.data) == 1005
    assert rest.status() == b"0"


def test_the_connection_window_is_respected_until_window_update() -> None:
    size = 100_000

    async def body() -> tuple[int, Response]:
        async with raw({ECHO: unary(sized)}) as (client, _):
            client.send(frame(SETTINGS, 0, 0, struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE,
                                                          1 << 20)),
                        frame(HEADERS, END_HEADERS, 1, request_block()),
                        frame(DATA, END_STREAM, 1, grpc_message(b"%d" % size)))
            sent = 0
            while sent < 65_535:  # the connection's initial window; no WINDOW_UPDATE sent
                got = await client.read_frame()
                if got.stream == 1 and got.kind == DATA:
                    sent += len(got.payload)
            client.send(frame(PING, 0, 0, b"barrier!"))
            while True:
                got = await client.read_frame()
                if got.kind == PING and got.flags & ACK:
                    break
                assert not (got.stream == 1 and got.kind == DATA), "DATA beyond the window"
            client.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20)))
            return sent, await client.response(1)

    sent, rest = run(body())
    assert sent == 65_535
    assert sent + len(rest.data) == size + 5
    assert rest.status() == b"0"


def test_new_streams_after_goaway_are_refused_while_open_ones_finish() -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def held(request: bytes, context: ServicerContext) -> bytes:
        started.set()
        await release.wait()
        return b"done"

    async def body() -> tuple[Frame, Frame, Response]:
        async with raw({ECHO: unary(held)}) as (client, s):
            client.send(frame(HEADERS, END_HEADERS, 1, request_block()),
                        frame(DATA, END_STREAM, 1, grpc_message(b"")))
            await within(started.wait())
            stop = asyncio.create_task(s.server.stop(WAIT))
            goaway = await client.until(GOAWAY)
            client.send(frame(HEADERS, END_HEADERS, 3, request_block()),
                        frame(DATA, END_STREAM, 3, grpc_message(b"")))
            refusal = await client.until(RST_STREAM)
            release.set()
            response = await client.response(1)
            await within(stop)
            return goaway, refusal, response

    goaway, refusal, response = run(body())
    assert struct.unpack(">II", goaway.payload[:8]) == (1, 0)  # last stream 1, NO_ERROR
    assert (refusal.stream, refusal.payload) == (3, struct.pack(">I", REFUSED_STREAM))
    assert response.data == grpc_message(b"done")
    assert response.status() == b"0"


def test_a_frame_over_16384_bytes_is_a_frame_size_error() -> None:
    async def body() -> Frame:
        async with raw() as (client, s):
            client.send(frame(HEADERS, END_HEADERS, 1, request_block()),
                        frame(DATA, END_STREAM, 1, b"\x00" * 16_385))
            goaway = await client.until(GOAWAY)
            await client.eof()
            assert await within(s.unary(ECHO)(b"ok")) == b"echo:ok"
            return goaway

    goaway = run(body())
    last_stream, code = struct.unpack_from(">II", goaway.payload)
    assert code == FRAME_SIZE_ERROR
    assert last_stream == 1


@pytest.mark.parametrize("encoding", [None, b"gzip"])
def test_a_compressed_message_is_unimplemented(encoding: bytes | None) -> None:
    async def body() -> Response:
        async with raw() as (client, _):
            extra = [(b"grpc-encoding", encoding)] if encoding else []
            client.send(frame(HEADERS, END_HEADERS, 1, request_block(extra=extra)),
                        frame(DATA, END_STREAM, 1, b"\x01" + struct.pack(">I", 3) + b"abc"))
            return await client.response(1)

    response = run(body())
    assert response.status() == b"12"
    assert (b":status", b"200") in response.headers[0]


# -- C: after review (helper-17) -------------------------------------------------------
#
# Each test below pins a defect the review found: it failed on the server before the fix.


def watch_like(cancelled: asyncio.Event) -> Callable[..., AsyncIterator[bytes]]:
    """A bidi handler shaped like etcd's Watch: a task of its own reads the requests, the
    handler waits on a queue and answers. Only cancellation can end it once the requests
    stop; ``cancelled`` is set when it is cancelled."""

    async def handler(requests: AsyncIterator[Any],
                      context: ServicerContext) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def pump() -> None:
            async for request in requests:
                await queue.put(request)

        reader = asyncio.create_task(pump())
        try:
            while True:
                request = await queue.get()
                yield b"got:" + (request.key if isinstance(request, rpc_pb2.PutRequest)
                                 else request)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        finally:
            reader.cancel()

    return handler


@pytest.mark.parametrize("bad", ["too-large", "not-protobuf"])
def test_a_call_the_server_ends_for_a_bad_request_cancels_its_handler(bad: str) -> None:
    cancelled = asyncio.Event()
    handler = watch_like(cancelled)
    proto = rpc_pb2.PutRequest.FromString
    handlers: dict[str, Handler] = {
        BIDI: stream_stream(handler),
        "/test.S/ProtoBidi": grpc.stream_stream_rpc_method_handler(
            handler, request_deserializer=proto, response_serializer=ident),
    }

    async def body() -> grpc.aio.AioRpcError:
        async with serving(handlers, max_receive=1000) as s:
            if bad == "too-large":
                call = s.stream_stream(BIDI)(timeout=WAIT)
                await call.write(b"a")
                assert await within(call.read()) == b"got:a"
                await call.write(b"x" * 2000)
            else:
                call = s.stream_stream("/test.S/ProtoBidi")(timeout=WAIT)
                await call.write(rpc_pb2.PutRequest(key=b"k").SerializeToString())
                assert await within(call.read()) == b"got:k"
                await call.write(b"\x0a\x05ab")  # field 1 claims 5 bytes, 2 follow
            err = await failure(call.read())
            await within(cancelled.wait())  # not left waiting on its queue forever
            return err

    err = run(body())
    if bad == "too-large":
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.details() == "grpc: received message larger than max (2000 vs. 1000)"
    else:
        assert err.code() == grpc.StatusCode.INTERNAL


async def barrier(client: RawClient) -> list[Frame]:
    """Send a PING and return every frame read before its ACK: the server handles frames
    in order, so whatever it answered to the frames sent before the PING is in there."""
    client.send(frame(PING, 0, 0, b"barrier!"))
    frames: list[Frame] = []
    while True:
        got = await client.read_frame()
        if got.kind == PING and got.flags & ACK and got.payload == b"barrier!":
            return frames
        frames.append(got)


def big_windows() -> bytes:
    """SETTINGS and a WINDOW_UPDATE that open the server's send windows all the way."""
    return (frame(SETTINGS, 0, 0, struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE,
                                              2**31 - 1))
            + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 2**31 - 1 - 65_535)))


def test_stop_ends_a_stream_whose_output_waits_in_the_transport_unavailable() -> None:
    grace = 0.3
    started = asyncio.Event()
    ended = asyncio.Event()
    produced = 0

    async def endless(request: bytes, context: ServicerContext) -> AsyncIterator[bytes]:
        nonlocal produced
        try:
            started.set()
            while True:
                produced += 16_000
                yield b"t" * 16_000
        finally:
            ended.set()

    async def body() -> tuple[int, int, list[list[tuple[bytes, bytes]]], list[Frame]]:
        async with raw({COUNT: unary_stream(endless)}) as (client, s):
            # The windows are wide open: only the transport holds the output back, as the
            # client reads nothing until the server has stopped.
            client.send(big_windows(),
                        frame(HEADERS, END_HEADERS, 1, request_block(COUNT.encode())),
                        frame(DATA, END_STREAM, 1, grpc_message(b"")))
            await within(started.wait())
            await within(s.server.stop(grace), grace + WAIT)
            assert ended.is_set()
            at_stop = produced
            received = 0
            blocks: list[list[tuple[bytes, bytes]]] = []
            while True:  # everything the server wrote, in order
                got = await client.read_frame()
                if got.stream != 1:
                    client.other.append(got)
                    continue
                assert got.kind != RST_STREAM, got
                if got.kind == DATA:
                    received += len(got.payload)
                elif got.kind == HEADERS:
                    blocks.append(client.decoder.decode(got.payload))
                if got.flags & END_STREAM:
                    break
            return at_stop, received, blocks, client.other

    at_stop, received, blocks, other = run(body())
    # The handler never awaits on its own: it gave the loop back only when the transport
    # paused, with what the kernel and the transport buffer hold unread (~4 MB here).
    assert at_stop > 512 << 10
    assert received == at_stop // 16_000 * (16_000 + 5)
    assert len(blocks) == 2
    assert (b":status", b"200") in blocks[0]
    assert (b"grpc-status", b"14") in blocks[1]  # UNAVAILABLE, not CANCELLED (1)
    assert any(f.kind == GOAWAY for f in other)


def test_a_unary_handler_that_returns_none_is_unknown() -> None:
    async def nothing(request: bytes, context: ServicerContext) -> None:
        return None

    async def body() -> tuple[grpc.aio.AioRpcError, bytes]:
        async with serving({**BASIC, "/test.S/Nothing": unary(nothing)}) as s:
            err = await failure(s.unary("/test.S/Nothing")(b"", timeout=WAIT))
            return err, bytes(await within(s.unary(ECHO)(b"after")))

    err, after = run(body())
    assert err.code() == grpc.StatusCode.UNKNOWN
    assert after == b"echo:after"


def test_stop_returns_when_the_last_client_with_an_open_call_disconnects() -> None:
    grace = 5.0
    holder = Held()
    started, ended = holder.started, holder.ended

    async def held(request: bytes, context: ServicerContext) -> bytes:
        await holder.hold()
        return b""

    async def body() -> float:
        async with raw({ECHO: unary(held)}) as (client, s):
            client.send(frame(HEADERS, END_HEADERS, 1, request_block()),
                        frame(DATA, END_STREAM, 1, grpc_message(b"")))
            await within(started.wait())
            begun = time.monotonic()
            stop = asyncio.create_task(s.server.stop(grace))
            await client.until(GOAWAY)  # stop() is in its grace period
            client.close()  # gone without a RST_STREAM
            await within(stop, grace + WAIT)
            elapsed = time.monotonic() - begun
            assert ended.is_set()
            return elapsed

    assert run(body()) < 2.0


def test_data_beyond_the_stream_window_is_a_flow_control_error() -> None:
    held = Held()
    started, cancelled = held.started, held.ended

    async def never_reads(requests: AsyncIterator[bytes], context: ServicerContext) -> bytes:
        await held.hold()
        return b""

    size = 16_384  # one whole message per DATA frame
    message = grpc_message(b"m" * (size - 5))
    # The server gives stream credit back while the handler holds less than a window of
    # unread messages: with a handler that never reads, it grants 1 MiB (initial) + 1 MiB
    # (two WINDOW_UPDATEs) at most. This client ignores them and sends 3 MiB.
    frames = 3 * STREAM_WINDOW // size

    async def body() -> Response:
        async with raw({**BASIC, SUM: stream_unary(never_reads)}) as (client, _):
            client.send(frame(HEADERS, END_HEADERS, 1, request_block(SUM.encode())))
            await within(started.wait())
            client.send(*(frame(DATA, 0, 1, message) for _ in range(frames)))
            seen = await barrier(client)
            resets = [(f.stream, f.payload) for f in seen if f.kind == RST_STREAM]
            assert resets == [(1, struct.pack(">I", FLOW_CONTROL_ERROR))]
            assert not any(f.kind == GOAWAY for f in seen)  # a stream error only
            await within(cancelled.wait())  # the reset call's handler is stopped
            client.send(frame(HEADERS, END_HEADERS, 3, request_block()),
                        frame(DATA, END_STREAM, 3, grpc_message(b"next")))
            return await client.response(3)

    after = run(body())
    assert after.data == grpc_message(b"echo:next")
    assert after.status() == b"0"


def test_an_unknown_method_with_end_stream_gets_trailers_only_and_no_reset() -> None:
    async def body() -> list[Frame]:
        async with raw() as (client, _):
            client.send(frame(HEADERS, END_HEADERS | END_STREAM, 1,
                              request_block(b"/test.S/Nope")))
            return await barrier(client)

    seen = run(body())
    on_stream = [f for f in seen if f.stream == 1]
    assert [(f.kind, f.flags & END_STREAM) for f in on_stream] == [(HEADERS, END_STREAM)]
    block = hpack.Decoder().decode(on_stream[0].payload)
    assert (b":status", b"200") in block
    assert (b"grpc-status", b"12") in block
    assert not any(f.kind == RST_STREAM for f in seen)


def test_a_header_block_over_64_kib_is_enhance_your_calm() -> None:
    block = request_block(extra=[(b"x-big", b"a" * (70 << 10))])
    assert len(block) > 64 << 10
    chunks = [block[i:i + 16_384] for i in range(0, len(block), 16_384)]

    async def body() -> Frame:
        async with raw() as (client, s):
            client.send(frame(HEADERS, 0, 1, chunks[0]),
                        *(frame(CONTINUATION, 0, 1, c) for c in chunks[1:-1]),
                        frame(CONTINUATION, END_HEADERS, 1, chunks[-1]),
                        frame(DATA, END_STREAM, 1, grpc_message(b"")),
                        frame(PING, 0, 0, b"barrier!"))
            while True:  # the old server answered the call and the PING
                got = await client.read_frame()
                assert not (got.kind == PING and got.flags & ACK), "no GOAWAY"
                assert got.stream != 1, got
                if got.kind == GOAWAY:
                    break
            await client.eof()
            assert await within(s.unary(ECHO)(b"ok")) == b"echo:ok"
            return got

    goaway = run(body())
    last_stream, code = struct.unpack_from(">II", goaway.payload)
    assert code == ENHANCE_YOUR_CALM
    assert last_stream == 0


@pytest.mark.parametrize("char", ["é", "€"])
def test_long_non_ascii_details_are_cut_on_a_character_and_fit_one_frame(char: str) -> None:
    details = char * 10_000

    async def fail(request: bytes, context: ServicerContext) -> bytes:
        await context.abort(StatusCode.FAILED_PRECONDITION, details)

    async def peer(request: bytes, context: ServicerContext) -> bytes:
        return context.peer().encode()

    handlers = {ECHO: unary(fail), "/test.S/Peer": unary(peer)}

    async def body() -> tuple[grpc.aio.AioRpcError, bytes, bytes, Frame]:
        async with serving(handlers) as s:
            first = bytes(await within(s.unary("/test.S/Peer")(b"")))
            err = await failure(s.unary(ECHO)(b"", timeout=WAIT))
            second = bytes(await within(s.unary("/test.S/Peer")(b"")))
        async with raw(handlers) as (client, _):
            client.send(frame(HEADERS, END_HEADERS, 1, request_block()),
                        frame(DATA, END_STREAM, 1, grpc_message(b"")))
            trailers = await client.until(HEADERS, END_STREAM)
        return err, first, second, trailers

    err, first, second, trailers = run(body())
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    got = err.details() or ""
    assert got and details.startswith(got)
    assert "\ufffd" not in got
    assert first == second  # the same connection: the trailers did not break it
    assert trailers.stream == 1
    assert len(trailers.payload) <= 16_384
    block = dict(hpack.Decoder().decode(trailers.payload))
    assert block[b"grpc-status"] == b"9"
    raw_message = urllib.parse.unquote_to_bytes(block[b"grpc-message"])
    assert details.startswith(raw_message.decode("utf-8"))  # strict: whole characters


def test_a_24_mib_unary_response_arrives_intact() -> None:
    size = 24 << 20
    expected = pattern(size, seed=24)

    async def large(request: bytes, context: ServicerContext) -> bytes:
        return expected

    async def body() -> bytes:
        # CLIENT_OPTIONS lets the channel receive up to 64 MiB.
        async with serving({ECHO: unary(large)}) as s:
            return bytes(await within(s.unary(ECHO)(b""), TEST_TIMEOUT))

    got = run(body())
    assert len(got) == size
    assert got == expected
