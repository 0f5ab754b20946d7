"""coord's own gRPC server (:mod:`coord.rpc.h2.server`) driven by a real grpcio client.

Every call shape (``grpc.aio``), many calls at once, messages far larger than a flow-control
window; errors and their exact status, deadlines, cancellation, metadata and a graceful
stop are in test_h2_server_calls.py. What a grpcio client never sends (raw HTTP/2 bytes)
is in test_h2_server_raw*.py; the service and serving helpers all use are in h2_served.py.

Every test runs its own event loop (``asyncio.run``, bounded by ``TEST_TIMEOUT``), listens
on 127.0.0.1 port 0 and stops its server in a ``finally``. Nothing sleeps to wait for a
condition: events and futures are awaited under a timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from coord.rpc.h2.server import (
    ServicerContext,
)
from tests.api.h2_support import (
    WAIT,
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
