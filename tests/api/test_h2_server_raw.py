"""coord's own gRPC server (:mod:`coord.rpc.h2.server`) spoken to in raw HTTP/2 bytes.

What a grpcio client never sends: a bad preface, split header blocks, padding, a tiny
flow-control window, an oversized frame, a compressed message, a header block over the
limit; and how a stop ends calls whose output waits in the transport. The grpcio-client
side is test_h2_server.py.

Every test runs its own event loop (``asyncio.run``, bounded by ``TEST_TIMEOUT``), listens
on 127.0.0.1 port 0 and stops its server in a ``finally``. Nothing sleeps to wait for a
condition: events and futures are awaited under a timeout.
"""
from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from coord.pb import rpc_pb2
from coord.rpc.h2.server import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
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
    WINDOW_UPDATE,
    ServicerContext,
    frame,
    grpc_message,
)
from tests.api.h2_support import (
    WAIT,
    ident,
    run,
    stream_stream,
    unary,
    within,
)

if TYPE_CHECKING:
    from tests.api.h2_support import Handler
from tests.api.h2_raw import (
    Frame,
    Response,
    huffman_literal,
    raw,
    request_block,
)
from tests.api.h2_served import (
    BIDI,
    ECHO,
    failure,
    serving,
    sized,
)


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
