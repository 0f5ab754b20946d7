"""coord's own gRPC server (:mod:`coord.rpc.h2.server`) driven by a real grpcio client.

Every call shape (``grpc.aio``), many calls at once, messages far larger than a flow-control
window, errors and their exact status, deadlines, cancellation, metadata and a graceful
stop. What a grpcio client never sends (raw HTTP/2 bytes) is in test_h2_server_raw.py; the
service and serving helpers both use are in h2_served.py.

Every test runs its own event loop (``asyncio.run``, bounded by ``TEST_TIMEOUT``), listens
on 127.0.0.1 port 0 and stops its server in a ``finally``. Nothing sleeps to wait for a
condition: events and futures are awaited under a timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from coord.pb import rpc_pb2
from coord.rpc.h2.server import (
    CallDetails,
    ServicerContext,
)
from coord.rpc.status import StatusCode
from tests.api.h2_support import (
    WAIT,
    Held,
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
from tests.api.h2_served import (
    BASIC,
    BIDI,
    COUNT,
    ECHO,
    SUM,
    count,
    echo,
    failure,
    serving,
    sized,
)

EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]


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
