"""coord's own client-streaming gRPC client (:mod:`coord.rpc.h2.client`).

Part A runs it against :class:`coord.rpc.h2.server.H2Server` in-process: messages in order
and intact across flow-control windows, backpressure, and every way a call dies (server
stop, connection loss, handler abort or early return, close, unknown method, no server).
Part B is a raw HTTP/2 peer that checks the bytes: the request headers, SETTINGS and PING
acknowledgements, a tiny stream window respected until WINDOW_UPDATE. Part C runs against
a ``grpc.aio`` server to show the client speaks standard gRPC.

Every test runs its own event loop (``asyncio.run``, bounded by ``TEST_TIMEOUT``), listens
on 127.0.0.1 port 0 and stops its server in a ``finally``. Nothing sleeps as a stand-in for
a condition: events and futures are awaited, and state is polled, under a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from coord.rpc.h2.client import StreamCall, StreamCallError
from coord.rpc.h2.server import (
    STREAM_WINDOW,
    CallDetails,
    H2Server,
    ServicerContext,
)
from coord.rpc.status import StatusCode
from tests.api.h2_support import (
    LISTEN,
    WAIT,
    pattern,
    run,
    stream_unary,
    within,
)
from tests.helpers.procs import free_port

if TYPE_CHECKING:
    from tests.api.h2_support import Handler

PROMPT = 1.0
"""How soon a dead call must show it."""
MAX_RECEIVE = 4 << 20
SUM = "/test.S/Sum"
OTHER = "/test.S/Other"


async def eventually(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll ``condition`` (state this loop changes; there is no event to await) until it
    holds, at most ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.002)


def digest(messages: list[bytes]) -> bytes:
    """Order- and boundary-sensitive digest of a message sequence, and its length."""
    h = hashlib.sha256()
    for m in messages:
        h.update(struct.pack(">I", len(m)) + m)
    return h.digest() + struct.pack(">I", len(messages))


@dataclass
class Served:
    server: H2Server
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def open(self, method: str = SUM) -> StreamCall:
        return await within(StreamCall.open(self.address, method, connect_timeout=WAIT))

    def abort_connections(self) -> None:
        """Drop every connection without GOAWAY: a lost connection, seen from the client."""
        for conn in list(self.server.connections):
            assert conn.transport is not None
            conn.transport.abort()


@contextlib.asynccontextmanager
async def serving(handlers: dict[str, Handler]) -> AsyncIterator[Served]:
    def resolve(details: CallDetails) -> Handler | None:
        return handlers.get(details.method)

    server = H2Server(resolve, MAX_RECEIVE)
    port = await server.start(LISTEN)
    try:
        yield Served(server, port)
    finally:
        await server.stop(0)


class Collector:
    """A ``Sum`` handler: keeps every message; answers with :func:`digest` of them."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.first = asyncio.Event()
        self.ended = asyncio.Event()
        self.cancelled = False

    async def __call__(self, requests: AsyncIterator[bytes], context: ServicerContext) -> bytes:
        try:
            async for message in requests:
                self.got.append(message)
                self.first.set()
            return digest(self.got)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.ended.set()


async def write_until_dead(call: StreamCall) -> StreamCallError:
    """Keep writing (and draining) until the call says it is dead; that error."""
    try:
        async with asyncio.timeout(WAIT):
            while True:
                call.write(b"more")
                await call.drain()
                await asyncio.sleep(0.001)  # pacing, so the loop reads the server's frames
    except StreamCallError as err:
        return err


# -- A1: messages in order, intact ------------------------------------------------------


def workload() -> list[bytes]:
    """Many small messages with some over 64 KiB and over 1 MiB among them."""
    rng = random.Random(3)
    messages = [pattern(rng.randrange(0, 300), seed=i) for i in range(3000)]
    for i, size in ((5, 70_000), (700, 1_500_000), (701, 100_000), (1500, 2_600_000),
                    (2999, 65_536)):
        messages[i] = pattern(size, seed=10_000 + i)
    return messages


@pytest.mark.parametrize("uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_messages_arrive_in_order_and_intact(uvloop: bool) -> None:
    messages = workload()

    async def body() -> tuple[bytes, list[bytes]]:
        collector = Collector()
        async with serving({SUM: stream_unary(collector)}) as s:
            call = await s.open()
            for i, message in enumerate(messages):
                call.write(message)
                if i % 7 == 0:  # several writes per drain, several per loop turn
                    await within(call.drain())
            response = await within(call.finish())
            assert call.closed
            return response, collector.got

    response, got = run(body(), uvloop=uvloop)
    assert len(got) == len(messages)
    assert got == messages
    assert response == digest(messages)


def test_everything_written_in_one_loop_turn_goes_out_in_one_transport_write(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> tuple[list[int], list[bytes]]:
        collector = Collector()
        async with serving({SUM: stream_unary(collector)}) as s:
            call = await s.open()
            transport = call._transport
            assert transport is not None
            writes: list[int] = []
            real = transport.write

            def counted(data: bytes | bytearray | memoryview) -> None:
                writes.append(len(data))
                real(data)

            monkeypatch.setattr(transport, "write", counted)
            for i in range(200):
                call.write(b"m%d" % i)
            assert writes == []  # nothing before the loop turn ends
            await within(collector.first.wait())
            first_turn = list(writes)
            await within(call.finish())
            return first_turn, collector.got

    first_turn, got = run(body())
    assert len(first_turn) == 1
    assert got == [b"m%d" % i for i in range(200)]


# -- A2: backpressure --------------------------------------------------------------------


def test_drain_blocks_while_the_handler_does_not_read_and_memory_stays_bounded() -> None:
    size, n = 64 << 10, 256  # 16 MiB in all, far more than the windows let through
    # In flight while the handler does not read: the server's stream window, plus the
    # credit it gives back while its inbox holds less than a window, plus a message.
    bound = 2 * STREAM_WINDOW + 2 * size
    release = asyncio.Event()
    taken = 0

    async def slow(requests: AsyncIterator[bytes], context: ServicerContext) -> bytes:
        nonlocal taken
        async for message in requests:
            assert message == bytes([taken % 251]) * size
            taken += 1
            if taken == 1:
                await release.wait()
        return b"%d" % taken

    async def body() -> None:
        written = 0
        waiting = False
        ahead = buffered = 0

        async def writer(call: StreamCall) -> None:
            nonlocal written, waiting, ahead, buffered
            for i in range(n):
                call.write(bytes([i % 251]) * size)
                buffered = max(buffered, call.buffered)
                waiting = True
                await call.drain()
                waiting = False
                written += 1
                ahead = max(ahead, (written - taken) * size)

        async with serving({SUM: stream_unary(slow)}) as s:
            call = await s.open()
            task = asyncio.create_task(writer(call))
            # The client used up more than a window, ran out of credit again, and the
            # writer waits in drain().
            await eventually(lambda: waiting and call.buffered > 0 and taken == 1
                             and written * size >= STREAM_WINDOW)
            assert not task.done()
            assert written * size <= bound
            release.set()
            await within(task)
            assert await within(call.finish()) == b"%d" % n
        assert ahead <= bound, ahead  # the writer never ran far ahead of the handler
        assert buffered <= size + 5, buffered  # at most one message waits for credit

    run(body())


# -- A3: how a call dies ---------------------------------------------------------------


def test_server_stop_fails_the_call_promptly_even_with_a_long_grace() -> None:
    async def body() -> StreamCallError:
        collector = Collector()
        async with serving({SUM: stream_unary(collector)}) as s:
            call = await s.open()
            call.write(b"hello")
            await within(collector.first.wait())
            begun = time.monotonic()
            # GOAWAY: the client gives up its stream, so stop() need not wait for it.
            await within(s.server.stop(WAIT))
            await eventually(lambda: call.closed, PROMPT)
            assert time.monotonic() - begun < PROMPT
            with pytest.raises(StreamCallError):
                call.write(b"late")
            with pytest.raises(StreamCallError):
                await within(call.drain())
            return await write_until_dead(call)

    err = run(body())
    assert "GOAWAY" in str(err)
    assert err.status is None
    assert isinstance(err, ConnectionError)


def test_connection_loss_fails_the_call_promptly() -> None:
    async def body() -> tuple[float, StreamCallError]:
        collector = Collector()
        async with serving({SUM: stream_unary(collector)}) as s:
            call = await s.open()
            call.write(b"hello")
            await within(collector.first.wait())
            begun = time.monotonic()
            s.abort_connections()  # no GOAWAY, no trailers: the socket just goes
            err = await write_until_dead(call)
            return time.monotonic() - begun, err

    elapsed, err = run(body())
    assert elapsed < PROMPT
    assert "connection lost" in str(err)
    assert err.status is None


def test_handler_abort_fails_the_call_with_its_status_and_details() -> None:
    async def picky(requests: AsyncIterator[bytes], context: ServicerContext) -> bytes:
        async for message in requests:
            if message == b"bad":
                await context.abort(StatusCode.FAILED_PRECONDITION,
                                    "no thanks: ünïcode 100%")
        return b""

    async def body() -> tuple[StreamCallError, StreamCallError]:
        async with serving({SUM: stream_unary(picky)}) as s:
            call = await s.open()
            call.write(b"good")
            call.write(b"bad")
            err = await write_until_dead(call)
            with pytest.raises(StreamCallError) as caught:
                await within(call.finish())
            return err, caught.value

    err, again = run(body())
    assert err.status is StatusCode.FAILED_PRECONDITION
    assert "no thanks: ünïcode 100%" in str(err)
    assert (again.status, str(again)) == (err.status, str(err))


def test_a_handler_that_returns_early_ends_the_call() -> None:
    async def one(requests: AsyncIterator[bytes], context: ServicerContext) -> bytes:
        async for message in requests:
            return b"got " + message
        return b""

    async def body() -> StreamCallError:
        async with serving({SUM: stream_unary(one)}) as s:
            call = await s.open()
            call.write(b"first")
            return await write_until_dead(call)

    err = run(body())
    assert err.status is StatusCode.OK
    assert "ended by the server" in str(err)


def test_an_unknown_method_is_unimplemented() -> None:
    async def body() -> StreamCallError:
        async with serving({}) as s:
            with pytest.raises(StreamCallError) as caught:
                # The refusal may come with the server's SETTINGS (open() raises) or after.
                call = await s.open(OTHER)
                await within(call.finish())
            return caught.value

    assert run(body()).status is StatusCode.UNIMPLEMENTED


def test_close_cancels_the_handler_and_the_call_stays_dead() -> None:
    async def body() -> Collector:
        collector = Collector()
        async with serving({SUM: stream_unary(collector)}) as s:
            call = await s.open()
            call.write(b"one")
            await within(collector.first.wait())
            call.close()
            assert call.closed
            await within(collector.ended.wait())
            call.close()  # idempotent
            with pytest.raises(StreamCallError, match="closed by the client"):
                call.write(b"two")
            with pytest.raises(StreamCallError):
                await call.drain()
            return collector

    collector = run(body())
    assert collector.cancelled
    assert collector.got == [b"one"]


def test_connecting_to_a_closed_port_fails_within_the_timeout() -> None:
    async def body() -> float:
        begun = time.monotonic()
        with pytest.raises(ConnectionError):
            await StreamCall.open(f"127.0.0.1:{free_port()}", SUM, connect_timeout=2.0)
        return time.monotonic() - begun

    assert run(body()) < 2.0


@pytest.mark.parametrize("reply", [b"", b"HTTP/1.1 400 Bad Request\r\n\r\n"],
                         ids=["silent", "http1"])
def test_a_peer_that_is_not_an_h2_server_fails_open(reply: bytes) -> None:
    timeout = 0.3

    async def body() -> tuple[float, StreamCallError]:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(reply)
            await reader.read()  # until the client goes away
            writer.close()

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            begun = time.monotonic()
            with pytest.raises(StreamCallError) as caught:
                await within(StreamCall.open(f"127.0.0.1:{port}", SUM,
                                             connect_timeout=timeout))
            return time.monotonic() - begun, caught.value
        finally:
            server.close()
            await server.wait_closed()

    elapsed, err = run(body())
    assert elapsed < timeout + PROMPT
    if reply:
        assert "not an h2c gRPC server" in str(err)
    else:
        assert elapsed >= timeout * 0.9
        assert "within 0.3 s" in str(err)


# -- C: interop with grpc.aio ------------------------------------------------------------


def test_interop_with_a_grpc_aio_server() -> None:
    messages = workload()[:1200]  # includes 70 KB, 1.5 MB and 100 KB messages

    async def collect(requests: AsyncIterator[bytes], context: Any) -> bytes:
        return digest([bytes(m) async for m in requests])

    async def refuse(requests: AsyncIterator[bytes], context: Any) -> bytes:
        async for _ in requests:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too much: ünï %")
        return b""

    async def body() -> tuple[bytes, StreamCallError, StreamCallError]:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_RECEIVE)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "test.S", {"Sum": stream_unary(collect), "Other": stream_unary(refuse)}),))
        port = server.add_insecure_port(LISTEN)
        await server.start()
        address = f"127.0.0.1:{port}"
        try:
            call = await within(StreamCall.open(address, SUM, connect_timeout=WAIT))
            for i, message in enumerate(messages):
                call.write(message)
                if i % 5 == 0:
                    await within(call.drain())
            response = await within(call.finish())

            refused = await within(StreamCall.open(address, OTHER, connect_timeout=WAIT))
            refused.write(b"anything")
            aborted = await write_until_dead(refused)

            open_call = await within(StreamCall.open(address, SUM, connect_timeout=WAIT))
            open_call.write(b"x")
            await within(open_call.drain())
            await within(server.stop(0))
            stopped = await write_until_dead(open_call)
            return response, aborted, stopped
        finally:
            await server.stop(None)

    response, aborted, stopped = run(body())
    assert response == digest(messages)
    assert aborted.status is StatusCode.RESOURCE_EXHAUSTED
    assert "too much: ünï %" in str(aborted)
    assert isinstance(stopped, ConnectionError)
