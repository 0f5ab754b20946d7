"""A bare HTTP/2 client for the raw-frame tests of coord's server (test_h2_server_raw*.py,
test_h2_rfc9113.py): it writes the frames it is given and reads and decodes what comes back.
``raw()`` serves the test handlers and connects one; ``barrier()`` reads up to a PING's ACK."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from coord.rpc.h2 import hpack
from coord.rpc.h2.server import (
    ACK,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PING,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    SETTINGS_INITIAL_WINDOW_SIZE,
    WINDOW_UPDATE,
    frame,
)
from tests.api.h2_support import (
    WAIT,
    within,
)

if TYPE_CHECKING:
    from tests.api.h2_support import Handler
from tests.api.h2_served import (
    BASIC,
    ECHO,
    MAX_RECEIVE,
    Served,
    serving,
)


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


