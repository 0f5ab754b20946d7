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
import contextlib
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
    ServicerContext,
    frame,
    grpc_message,
)
from coord.rpc.status import StatusCode
from tests.api.h2_support import (
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
from tests.api.h2_served import (
    BASIC,
    BIDI,
    COUNT,
    ECHO,
    MAX_RECEIVE,
    SUM,
    Served,
    failure,
    serving,
    sized,
)

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
