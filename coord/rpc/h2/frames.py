"""HTTP/2 frames (RFC 9113) and gRPC's message framing: the constants, the codec and the
header-block reassembly both ends of a connection use (``server``, ``client``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable

from coord.rpc.h2 import hpack
from coord.rpc.status import StatusCode

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 5, 6, 7, 8, 9
ENHANCE_YOUR_CALM = 11

SETTINGS_HEADER_TABLE_SIZE, SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS = 1, 2, 3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 4, 5, 6

DEFAULT_WINDOW = 65_535
MAX_WINDOW = 2**31 - 1
MAX_FRAME = 16_384
"""The largest frame this side accepts (SETTINGS_MAX_FRAME_SIZE left at its default)."""

MAX_HEADER_BLOCK = 64 << 10
"""The largest header block (HEADERS + CONTINUATION) accepted; gRPC clients send < 1 KiB."""

STREAM_WINDOW = 1 << 20
"""The receive window this server announces for each stream."""
CONNECTION_WINDOW = 64 << 20
"""The receive window of the whole connection (raised from 64 KiB right after the preface).
Its credit comes back as the handlers consume messages, so it bounds what one connection
can make this side buffer; when more than half of it is held by incomplete messages, the
stream with the largest one is reset (:meth:`Connection._shed_incomplete`)."""

FLUSH_AT = 256 << 10
"""Bytes queued in one loop turn after which they are handed to the transport at once."""

FRAME_HEADER = struct.Struct(">BHBBI")  # length as 8 + 16 bits, type, flags, stream id
U32 = struct.Struct(">I")
SETTING = struct.Struct(">HI")

RESPONSE_HEADERS = hpack.encode_indexed(8) + hpack.encode_literal_indexed_name(
    31, b"application/grpc")  # :status 200, content-type
TRAILERS_OK = hpack.encode_literal(b"grpc-status", b"0")


def frame(kind: int, flags: int, stream_id: int, payload: bytes | memoryview = b"") -> bytes:
    n = len(payload)
    return FRAME_HEADER.pack(n >> 16, n & 0xFFFF, kind, flags, stream_id) + payload


def grpc_message(data: bytes) -> bytes:
    """gRPC's length-prefixed message: not compressed, 4-byte big-endian length, data."""
    return b"\x00" + U32.pack(len(data)) + data


MAX_MESSAGE_DETAILS = 4096
"""Encoded bytes of grpc-message at most: the trailers must fit in one 16 KiB frame."""


def _percent_encode(text: str) -> bytes:
    """grpc-message's encoding: printable ASCII except ``%`` as is, every other byte
    (of the UTF-8 text) as ``%XX``; cut at a character boundary so that the result is at
    most :data:`MAX_MESSAGE_DETAILS` bytes."""
    out = bytearray()
    for char in text:
        code = ord(char)
        piece = (bytes((code,)) if 0x20 <= code <= 0x7E and code != 0x25
                 else b"".join(b"%%%02X" % b for b in char.encode("utf-8", "replace")))
        if len(out) + len(piece) > MAX_MESSAGE_DETAILS:
            break
        out += piece
    return bytes(out)


def status_block(code: StatusCode, details: str) -> bytes:
    block = hpack.encode_literal(b"grpc-status", str(code.value).encode())
    if details:
        block += hpack.encode_literal(b"grpc-message", _percent_encode(details))
    return block


def read_frames(buf: bytearray, on_frame: Callable[[int, int, int, bytes], None],
                alive: Callable[[], bool] = lambda: True) -> None:
    """Hand each complete frame at the start of ``buf`` to ``on_frame(kind, flags,
    stream_id, payload)`` while ``alive()``, then drop what was handed over. Raises
    :class:`H2ProtocolError` for a frame longer than this side accepts."""
    pos, end = 0, len(buf)
    try:
        while end - pos >= 9 and alive():
            length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
            if length > MAX_FRAME:
                raise H2ProtocolError(FRAME_SIZE_ERROR, f"frame of {length} bytes")
            if end - pos < 9 + length:
                break
            kind = buf[pos + 3]
            flags = buf[pos + 4]
            stream_id = U32.unpack_from(buf, pos + 5)[0] & 0x7FFFFFFF
            payload = bytes(buf[pos + 9:pos + 9 + length])
            pos += 9 + length
            on_frame(kind, flags, stream_id, payload)
    finally:
        del buf[:pos]


def enable_keepalive(transport: asyncio.BaseTransport) -> None:
    """TCP keepalive on the connection, so that a peer that vanished without a FIN or RST
    (a host that lost power, a cut cable) is noticed by the kernel."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

class H2ProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class HeaderBlocks:
    """Reassembles header blocks: a HEADERS frame (padding and priority fields removed)
    and the CONTINUATION frames that follow it, at most :data:`MAX_HEADER_BLOCK` bytes."""

    __slots__ = ("_block", "_flags", "stream")

    def __init__(self) -> None:
        self.stream = 0
        """The stream whose block is incomplete (0: none; only CONTINUATION may follow)."""
        self._flags = 0
        self._block = bytearray()

    def headers(self, flags: int, stream_id: int, payload: bytes) -> bytes | None:
        """A HEADERS frame: its complete block, or None while CONTINUATIONs must follow."""
        if not stream_id:
            raise H2ProtocolError(PROTOCOL_ERROR, "HEADERS on stream 0")
        start, end = 0, len(payload)
        if flags & PADDED:
            if not payload:
                raise H2ProtocolError(PROTOCOL_ERROR, "bad padding")
            start = 1
            end -= payload[0]
        if flags & PRIORITY_FLAG:
            start += 5
        if start > end:
            raise H2ProtocolError(PROTOCOL_ERROR, "bad HEADERS padding")
        if flags & END_HEADERS:
            return payload[start:end]
        self.stream = stream_id
        self._flags = flags
        self._block = bytearray(payload[start:end])
        return None

    def continuation(self, flags: int, stream_id: int, payload: bytes) -> tuple[int, bytes] | None:
        """A CONTINUATION frame: (the HEADERS frame's flags, the complete block) once it
        ends the block, else None."""
        if stream_id != self.stream or not stream_id:
            raise H2ProtocolError(PROTOCOL_ERROR, "unexpected CONTINUATION")
        self._block += payload
        if len(self._block) > MAX_HEADER_BLOCK:
            raise H2ProtocolError(ENHANCE_YOUR_CALM, "header block too large")
        if not flags & END_HEADERS:
            return None
        self.stream = 0
        block, self._block = bytes(self._block), bytearray()
        return self._flags, block
