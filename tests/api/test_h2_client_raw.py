"""coord's HTTP/2 peer client (:mod:`coord.rpc.h2.client`) against a raw HTTP/2 peer:
what it sends (headers, acknowledgements, DATA within a small window), and what it does
with a lost connection, a GOAWAY and frames on streams it never opened (RFC 9113 5.1).
The grpc-server side is test_h2_client.py. Each test's event loop is bounded; the peer
listens on 127.0.0.1 port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import pytest

from coord.rpc.h2 import hpack
from coord.rpc.h2.client import StreamCall, StreamCallError
from coord.rpc.h2.server import (
    ACK,
    CANCEL,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    PRIORITY,
    PROTOCOL_ERROR,
    RST_STREAM,
    SETTINGS,
    SETTINGS_INITIAL_WINDOW_SIZE,
    WINDOW_UPDATE,
    frame,
    grpc_message,
)
from tests.api.h2_support import (
    WAIT,
    pattern,
    run,
    within,
)

if TYPE_CHECKING:
    pass

PROMPT = 1.0
"""How soon a dead call must show it."""
MAX_RECEIVE = 4 << 20
SUM = "/test.S/Sum"
OTHER = "/test.S/Other"


class Frame(NamedTuple):
    kind: int
    flags: int
    stream: int
    payload: bytes


@dataclass
class Peer:
    """The server side of one raw connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))

    async def read_frame(self) -> Frame:
        async with asyncio.timeout(WAIT):
            head = await self.reader.readexactly(9)
            payload = await self.reader.readexactly(int.from_bytes(head[:3], "big"))
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        return Frame(head[3], head[4], stream, payload)

    async def handshake(self, settings: bytes = b"") -> list[Frame]:
        """Read the client's preface and its first three frames (SETTINGS, WINDOW_UPDATE,
        HEADERS); answer with SETTINGS (``settings`` as the payload)."""
        assert await within(self.reader.readexactly(len(PREFACE))) == PREFACE
        first = [await self.read_frame() for _ in range(3)]
        self.send(frame(SETTINGS, 0, 0, settings))
        return first


@contextlib.asynccontextmanager
async def raw_peer() -> AsyncIterator[tuple[str, asyncio.Future[Peer]]]:
    """A listening socket that hands its first connection over as a :class:`Peer`."""
    accepted: asyncio.Future[Peer] = asyncio.get_running_loop().create_future()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(Peer(reader, writer))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}", accepted
    finally:
        if accepted.done():
            accepted.result().writer.close()
        server.close()
        await server.wait_closed()


def test_raw_headers_acks_and_a_small_stream_window() -> None:
    message = pattern(50_000, seed=5)
    window = 1000

    async def body() -> None:
        async with raw_peer() as (address, accepted):
            opening = asyncio.create_task(StreamCall.open(address, SUM, connect_timeout=WAIT))
            peer = await within(accepted)
            assert await within(peer.reader.readexactly(len(PREFACE))) == PREFACE
            settings = await peer.read_frame()
            assert (settings.kind, settings.flags, settings.stream) == (SETTINGS, 0, 0)
            values = dict(struct.iter_unpack(">HI", settings.payload))
            assert values[2] == 0  # ENABLE_PUSH
            assert values[SETTINGS_INITIAL_WINDOW_SIZE] >= 65_535
            update = await peer.read_frame()
            assert (update.kind, update.stream) == (WINDOW_UPDATE, 0)
            headers = await peer.read_frame()
            assert (headers.kind, headers.flags, headers.stream) == (HEADERS, END_HEADERS, 1)
            fields = hpack.Decoder().decode(headers.payload)
            assert fields[:4] == [(b":method", b"POST"), (b":scheme", b"http"),
                                  (b":path", SUM.encode()), (b":authority", address.encode())]
            assert (b"content-type", b"application/grpc") in fields
            assert (b"te", b"trailers") in fields
            assert not opening.done()  # open() waits for the server's SETTINGS

            peer.send(frame(SETTINGS, 0, 0, struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE,
                                                        window)))
            call: StreamCall = await within(opening)
            ack = await peer.read_frame()
            assert (ack.kind, ack.flags, ack.payload) == (SETTINGS, ACK, b"")

            call.write(message)
            assert call.buffered == len(message) + 5 - window
            drain = asyncio.create_task(call.drain())
            got = b""
            while len(got) < window:
                data = await peer.read_frame()
                assert (data.kind, data.stream, data.flags) == (DATA, 1, 0)
                got += data.payload
            # The PING's ACK comes after anything the client wrote before it: no DATA
            # beyond the window may come first.
            peer.send(frame(PING, 0, 0, b"barrier!"))
            pong = await peer.read_frame()
            assert (pong.kind, pong.flags, pong.payload) == (PING, ACK, b"barrier!")
            assert len(got) == window
            assert not drain.done()

            peer.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 100_000)))
            while len(got) < len(message) + 5:
                data = await peer.read_frame()
                assert (data.kind, data.stream) == (DATA, 1)
                assert len(data.payload) <= 16_384  # the default SETTINGS_MAX_FRAME_SIZE
                got += data.payload
            assert got == grpc_message(message)
            await within(drain)

            finishing = asyncio.create_task(call.finish())
            end = await peer.read_frame()
            assert (end.kind, end.flags, end.payload) == (DATA, END_STREAM, b"")
            peer.send(frame(HEADERS, END_HEADERS, 1, hpack.encode_indexed(8)  # :status 200
                            + hpack.encode_literal(b"content-type", b"application/grpc")),
                      frame(DATA, 0, 1, grpc_message(b"thanks")),
                      frame(HEADERS, END_HEADERS | END_STREAM, 1,
                            hpack.encode_literal(b"grpc-status", b"0")))
            assert await within(finishing) == b"thanks"
            assert await within(peer.reader.read()) == b""  # the client closed the connection

    run(body())


def test_raw_connection_loss_wakes_a_drain_blocked_by_flow_control() -> None:
    async def body() -> StreamCallError:
        async with raw_peer() as (address, accepted):
            opening = asyncio.create_task(StreamCall.open(address, SUM, connect_timeout=WAIT))
            peer = await within(accepted)
            await peer.handshake(struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, 0))
            call: StreamCall = await within(opening)
            call.write(b"no credit for this")
            drain = asyncio.create_task(call.drain())
            peer.send(frame(PING, 0, 0, b"barrier!"))  # the client has seen the SETTINGS
            while (await peer.read_frame()).kind != PING:
                pass
            assert not drain.done()
            assert call.buffered == 23
            peer.writer.transport.abort()
            with pytest.raises(StreamCallError) as caught:
                await within(drain, PROMPT)
            return caught.value

    assert "connection lost" in str(run(body()))


def test_raw_goaway_kills_the_call_and_is_answered_by_closing() -> None:
    async def body() -> StreamCallError:
        async with raw_peer() as (address, accepted):
            opening = asyncio.create_task(StreamCall.open(address, SUM, connect_timeout=WAIT))
            peer = await within(accepted)
            await peer.handshake()
            call: StreamCall = await within(opening)
            peer.send(frame(GOAWAY, 0, 0, struct.pack(">II", 0, 11) + b"calm down"))
            rest = await within(peer.reader.read())  # everything until the client closes
            assert call.closed
            assert frame(RST_STREAM, 0, 1, struct.pack(">I", CANCEL)) in rest
            with pytest.raises(StreamCallError) as caught:
                call.write(b"x")
            return caught.value

    assert "GOAWAY (ENHANCE_YOUR_CALM): calm down" in str(run(body()))


@pytest.mark.parametrize("kind", ["data", "headers", "window-update", "rst-stream"])
def test_raw_a_frame_on_a_stream_the_client_never_opened_is_a_protocol_error(
        kind: str) -> None:
    sent = {"data": frame(DATA, 0, 3, b"x"),
            "headers": frame(HEADERS, END_HEADERS, 2, hpack.encode_indexed(8)),
            "window-update": frame(WINDOW_UPDATE, 0, 3, struct.pack(">I", 10)),
            "rst-stream": frame(RST_STREAM, 0, 5, struct.pack(">I", CANCEL))}[kind]

    async def body() -> tuple[bytes, StreamCallError]:
        async with raw_peer() as (address, accepted):
            opening = asyncio.create_task(StreamCall.open(address, SUM, connect_timeout=WAIT))
            peer = await within(accepted)
            await peer.handshake()
            call: StreamCall = await within(opening)
            peer.send(sent)
            rest = await within(peer.reader.read())  # everything until the client closes
            assert call.closed
            with pytest.raises(StreamCallError) as caught:
                call.write(b"x")
            return rest, caught.value

    rest, err = run(body())
    assert struct.pack(">II", 0, PROTOCOL_ERROR) in rest  # in its GOAWAY
    assert "PROTOCOL_ERROR" in str(err)


def test_raw_priority_on_another_stream_is_ignored_and_the_call_goes_on() -> None:
    async def body() -> bytes:
        async with raw_peer() as (address, accepted):
            opening = asyncio.create_task(StreamCall.open(address, SUM, connect_timeout=WAIT))
            peer = await within(accepted)
            await peer.handshake()
            call: StreamCall = await within(opening)
            peer.send(frame(PRIORITY, 0, 3, struct.pack(">IB", 0, 15)))
            call.write(b"7")
            await within(call.drain())
            finishing = asyncio.create_task(call.finish())
            peer.send(frame(HEADERS, END_HEADERS, 1, hpack.encode_indexed(8)
                            + hpack.encode_literal(b"content-type", b"application/grpc")),
                      frame(DATA, 0, 1, grpc_message(b"7")),
                      frame(HEADERS, END_HEADERS | END_STREAM, 1,
                            hpack.encode_literal(b"grpc-status", b"0")))
            return await within(finishing)

    assert run(body()) == b"7"
