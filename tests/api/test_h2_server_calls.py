"""coord's own gRPC server (:mod:`coord.rpc.h2.server`) driven by a real grpcio client,
continued from test_h2_server.py: errors and their exact status, deadlines, cancellation,
metadata and a graceful stop.

Every test runs its own event loop (``asyncio.run``, bounded by ``TEST_TIMEOUT``), listens
on 127.0.0.1 port 0 and stops its server in a ``finally``. Nothing sleeps to wait for a
condition: events and futures are awaited under a timeout.
"""

from __future__ import annotations

import asyncio
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
    run,
    stream_stream,
    stream_unary,
    unary,
    unary_stream,
    within,
)

if TYPE_CHECKING:
    pass
from tests.api.h2_served import (
    BASIC,
    BIDI,
    COUNT,
    ECHO,
    SUM,
    echo,
    failure,
    serving,
)

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
