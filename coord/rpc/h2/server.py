"""A gRPC server on asyncio: HTTP/2 framing, flow control and gRPC's message framing,
serving method handlers with grpcio's fields (:class:`coord.rpc.handlers.MethodHandler`,
built from the protobuf service descriptors; grpcio's own ``RpcMethodHandler`` works too).
Nothing here imports grpcio (docs/grpc-server.md).

Why not ``grpc.aio.server``: every call through it costs 0.3 ms of CPU on this machine
(three asyncio tasks, futures and a hand-off from its poller thread per call) — more than a
whole etcd request and about four times coord's own work for a put (docs/benchmarks.md).
This server does what the client port needs in one ``asyncio.Protocol`` per connection:
frames are parsed straight from ``data_received``, a call is one task, and everything a
loop turn writes goes out in one ``transport.write``; the same bare "return a constant
PutResponse" benchmark costs 0.03 ms per call.

Scope — what etcd's clients use: prior-knowledge HTTP/2 without TLS (``h2c``), unary and
streaming calls in both directions, flow control on both sides, ``grpc-timeout``
deadlines, cancellation by ``RST_STREAM``, PING, GOAWAY on shutdown, status and message in
trailers (or a trailers-only response). Not supported, refused cleanly: compressed
messages (``grpc-encoding``), server push (never sent), priorities (ignored, as RFC 9113
allows). Handlers see a :class:`ServicerContext` that implements the part of
``grpc.aio.ServicerContext`` coord's services use (``abort``, metadata, peer, deadline;
:class:`coord.rpc.handlers.Context`), with coord's own :class:`StatusCode`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import socket
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import structlog

from coord.netaddr import parse_hostport
from coord.rpc.h2 import hpack
from coord.rpc.h2.limits import (
    MAX_CONCURRENT_STREAMS,
    MAX_HEADER_LIST_SIZE,
    PENDING_RESPONSE_LIMIT,
    PING_BURST,
    PING_RATE,
    PREFACE_TIMEOUT,
    RESET_BURST,
    RESET_RATE,
    SETTINGS_BURST,
    SETTINGS_RATE,
    Bucket,
)
from coord.rpc.status import StatusCode

log = structlog.get_logger("coord.rpc.h2")

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

_RESPONSE_HEADERS = hpack.encode_indexed(8) + hpack.encode_literal_indexed_name(
    31, b"application/grpc")  # :status 200, content-type
_TRAILERS_OK = hpack.encode_literal(b"grpc-status", b"0")
_TIMEOUT_UNITS = {ord("H"): 3600.0, ord("M"): 60.0, ord("S"): 1.0, ord("m"): 1e-3,
                  ord("u"): 1e-6, ord("n"): 1e-9}


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


class FrameHandler(asyncio.Protocol):
    """What both ends of a connection do with incoming frames: check them, answer PINGs,
    reassemble header blocks, and hand the rest to the hooks a subclass implements."""

    _blocks: HeaderBlocks
    _send_window: int
    """Bytes of DATA the peer lets this side send on the connection."""
    _peer_initial_window: int
    _peer_max_frame: int
    _pings: Bucket | None = None
    """PING frames the peer may still send (None: no limit)."""
    _settings_frames: Bucket | None = None
    """SETTINGS frames the peer may still send (None: no limit)."""
    _credit_total = 0
    _sent_at_ping = 0
    """Connection-level credit the peer gave so far (with ``_send_window``: DATA sent)."""

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        raise NotImplementedError

    def _on_header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        raise NotImplementedError

    def _on_initial_window(self, delta: int) -> None:
        """The peer changed SETTINGS_INITIAL_WINDOW_SIZE by ``delta``: every stream's send
        window moves by it (RFC 9113 6.9.2)."""
        raise NotImplementedError

    def _on_peer_settings(self) -> None:
        """The peer's SETTINGS were applied and acknowledged."""
        raise NotImplementedError

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise H2ProtocolError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise H2ProtocolError(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise H2ProtocolError(FRAME_SIZE_ERROR, "bad SETTINGS length")
        if self._settings_frames is not None and not self._settings_frames.take():
            raise H2ProtocolError(ENHANCE_YOUR_CALM, "too many SETTINGS")
        for i in range(0, len(payload), 6):
            key, value = SETTING.unpack_from(payload, i)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise H2ProtocolError(FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                self._on_initial_window(delta)
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not MAX_FRAME <= value <= 2**24 - 1:
                    raise H2ProtocolError(PROTOCOL_ERROR, "bad max frame size")
                self._peer_max_frame = value
        self._write(frame(SETTINGS, ACK, 0))
        self._on_peer_settings()

    def _on_connection_credit(self) -> None:
        """The peer gave connection-level credit (``_send_window`` already raised)."""
        raise NotImplementedError

    def _on_stream_credit(self, stream_id: int, increment: int) -> None:
        """The peer gave ``increment`` bytes of credit (maybe 0: an error) on a stream."""
        raise NotImplementedError

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2ProtocolError(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
        increment = U32.unpack(payload)[0] & 0x7FFFFFFF
        if stream_id:
            self._on_stream_credit(stream_id, increment)
            return
        if not increment:
            raise H2ProtocolError(PROTOCOL_ERROR, "zero window increment")
        self._send_window += increment
        self._credit_total += increment
        if self._send_window > MAX_WINDOW:
            raise H2ProtocolError(FLOW_CONTROL_ERROR, "connection window overflow")
        self._on_connection_credit()

    def _on_rst_stream(self, stream_id: int, code: int) -> None:
        raise NotImplementedError

    def _data_since_ping(self) -> bool:
        """Whether this side sent DATA since the last PING over the limit (then the PING is
        allowed, as in grpc-go: clients measure bandwidth with PINGs while data flows)."""
        sent = self._credit_total - self._send_window
        if sent != self._sent_at_ping:
            self._sent_at_ping = sent
            return True
        return False

    def _on_goaway(self, code: int, debug: bytes) -> None:
        raise NotImplementedError

    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._blocks.stream and kind != CONTINUATION:
            raise H2ProtocolError(PROTOCOL_ERROR, "expected CONTINUATION")
        if kind == DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == HEADERS:
            block = self._blocks.headers(flags, stream_id, payload)
            if block is not None:
                self._on_header_block(stream_id, flags, block)
        elif kind == CONTINUATION:
            done = self._blocks.continuation(flags, stream_id, payload)
            if done is not None:
                self._on_header_block(stream_id, *done)
        elif kind == SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == PING:
            if len(payload) != 8 or stream_id:
                raise H2ProtocolError(FRAME_SIZE_ERROR, "bad PING")
            if self._pings is not None and not self._pings.take() \
                    and not self._data_since_ping():
                raise H2ProtocolError(ENHANCE_YOUR_CALM, "too_many_pings")
            if not flags & ACK:
                self._write(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            if not stream_id or len(payload) != 4:
                raise H2ProtocolError(PROTOCOL_ERROR, "bad RST_STREAM")
            self._on_rst_stream(stream_id, U32.unpack(payload)[0])
        elif kind == GOAWAY:
            if len(payload) < 8 or stream_id:
                raise H2ProtocolError(PROTOCOL_ERROR, "bad GOAWAY")
            self._on_goaway(U32.unpack_from(payload, 4)[0], payload[8:])
        elif kind == PUSH_PROMISE:
            raise H2ProtocolError(PROTOCOL_ERROR, "PUSH_PROMISE (push is disabled)")
        # PRIORITY and unknown frame types are ignored (RFC 9113 sections 5.5 and 5.3.2).


class RpcAbort(Exception):
    """Raised by :meth:`ServicerContext.abort`; ends the call with this status."""

    def __init__(self, code: StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class CallDetails:
    """What a handler resolver sees of a call (``grpc.HandlerCallDetails``' two fields).
    The metadata is decoded only if the resolver asks for it."""

    __slots__ = ("_headers", "method")

    def __init__(self, method: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.method = method
        self._headers = headers

    @property
    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return metadata(self._headers)


def metadata(headers: list[tuple[bytes, bytes]]) -> tuple[tuple[str, str | bytes], ...]:
    """Custom metadata from a header list: no pseudo-headers, none of HTTP's or gRPC's own;
    ``-bin`` values base64-decoded as gRPC specifies."""
    out: list[tuple[str, str | bytes]] = []
    for name, value in headers:
        if name[:1] == b":" or name in _RESERVED or name.startswith(b"grpc-"):
            continue
        key = name.decode("latin-1")
        if key.endswith("-bin"):
            try:
                out.append((key, base64.b64decode(value + b"=" * (-len(value) % 4))))
            except binascii.Error:
                continue  # not base64: the entry is left out, the call goes on
        else:
            out.append((key, value.decode("latin-1")))
    return tuple(out)


_RESERVED = frozenset((b"content-type", b"te", b"user-agent"))


class ServicerContext:
    """The per-call object handlers receive; mirrors the ``grpc.aio.ServicerContext``
    methods coord uses."""

    __slots__ = ("_stream",)

    def __init__(self, stream: Stream) -> None:
        self._stream = stream

    async def abort(self, code: StatusCode, details: str = "",
                    trailing_metadata: Sequence[tuple[str, str]] = ()) -> NoReturn:
        raise RpcAbort(code, details)

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return metadata(self._stream.headers)

    def peer(self) -> str:
        return self._stream.conn.peer

    def time_remaining(self) -> float | None:
        deadline = self._stream.deadline
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def cancelled(self) -> bool:
        return self._stream.reset

    def done(self) -> bool:
        return self._stream.local_closed

    def set_code(self, code: StatusCode) -> None:
        self._stream.code = code

    def set_details(self, details: str) -> None:
        self._stream.details = details


class Stream:
    """One call: its request headers, the request messages received so far, what waits to
    be sent under flow control, and the handler's task."""

    __slots__ = ("buffer", "code", "conn", "deadline", "details", "drain", "handler",
                 "headers", "headers_sent", "held", "id", "inbox", "local_closed",
                 "pending", "queued", "recv_window", "remote_closed", "reset", "send_window",
                 "task", "timer", "trailer", "unacked", "waiter")

    def __init__(self, conn: Connection, stream_id: int, headers: list[tuple[bytes, bytes]],
                 send_window: int) -> None:
        self.conn = conn
        self.id = stream_id
        self.headers = headers
        self.handler: Any = None
        self.task: asyncio.Task[None] | None = None
        self.buffer = bytearray()
        self.inbox: deque[bytes] = deque()
        self.queued = 0
        self.held = 0
        """DATA bytes of this stream not yet given back to the connection's window: those
        of incomplete messages and of messages the handler has not taken."""
        self.recv_window = STREAM_WINDOW
        self.waiter: asyncio.Future[None] | None = None
        self.remote_closed = False
        self.local_closed = False
        self.reset = False
        self.headers_sent = False
        self.send_window = send_window
        self.pending: deque[memoryview] = deque()
        self.trailer: bytes | None = None
        self.drain: asyncio.Future[None] | None = None
        self.unacked = 0
        self.deadline: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.code = StatusCode.OK
        self.details = ""

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


Resolver = Callable[[CallDetails], Any]
"""Maps a call to its method handler (:class:`coord.rpc.handlers.MethodHandler`, or
anything with the same fields, such as grpcio's ``RpcMethodHandler``), or None."""


class H2ProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Connection(FrameHandler):
    """One client connection. All state is touched on the event loop only."""

    def __init__(self, server: H2Server) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self._buf = bytearray()
        self._preface = False
        self._decoder = hpack.Decoder(max_list_size=MAX_HEADER_LIST_SIZE)
        self.streams: dict[int, Stream] = {}
        self._last_id = 0
        self._out: list[bytes] = []
        self._out_size = 0
        self._send_window = DEFAULT_WINDOW
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = MAX_FRAME
        self._conn_unacked = 0
        # The connection window holds back the bytes of messages not yet consumed, so it
        # must hold the largest message this side accepts.
        self._conn_window = min(MAX_WINDOW, max(CONNECTION_WINDOW,
                                                server.max_receive + 5 + 2 * MAX_FRAME))
        self._recv_window = self._conn_window
        self._pending_bytes = 0
        """Response bytes queued on all streams for lack of flow-control credit."""
        self._resets = Bucket(RESET_BURST, RESET_RATE)
        self._pings = Bucket(PING_BURST, PING_RATE)
        self._settings_frames = Bucket(SETTINGS_BURST, SETTINGS_RATE)
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._blocked: dict[int, Stream] = {}
        self._paused = False
        self._closed = False
        self._going_away = False
        self._blocks = HeaderBlocks()

    # -- transport callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            host = peer[0]
            self.peer = (f"ipv6:[{host}]:{peer[1]}" if ":" in host
                         else f"ipv4:{host}:{peer[1]}")
        self.server.connections.add(self)
        enable_keepalive(transport)  # dead clients are found by the kernel
        settings = (SETTING.pack(SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW)
                    + SETTING.pack(SETTINGS_ENABLE_PUSH, 0)
                    + SETTING.pack(SETTINGS_MAX_CONCURRENT_STREAMS, MAX_CONCURRENT_STREAMS)
                    + SETTING.pack(SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST_SIZE))
        self._write(frame(SETTINGS, 0, 0, settings)
                    + frame(WINDOW_UPDATE, 0, 0, U32.pack(self._conn_window - DEFAULT_WINDOW)))
        self._handshake_timer = self.loop.call_later(PREFACE_TIMEOUT, self._handshake_expired)

    def _handshake_expired(self) -> None:
        """The client did not send the preface and its SETTINGS in time: cut it off."""
        self._handshake_timer = None
        log.debug("h2.handshake_timeout", peer=self.peer)
        if self._preface:
            self._goaway(PROTOCOL_ERROR, b"no SETTINGS")
            self._flush()
        self._abort_connection()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.server.connections.discard(self)
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            self._reset_by_peer(stream)
        self._blocked.clear()
        if self.server.closing:
            self.server.idle.set()

    def pause_writing(self) -> None:
        # Stop reading too: what a client sends while it does not read (PINGs, calls)
        # would otherwise keep producing output nobody takes.
        self._paused = True
        if self.transport is not None:
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self.transport is not None and not self._closed:
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()
        for stream in list(self.streams.values()):
            self._wake_drain(stream)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        try:
            if not self._preface:
                if len(buf) < len(PREFACE):
                    if not PREFACE.startswith(bytes(buf)):
                        raise H2ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 preface")
                    return
                if buf[:len(PREFACE)] != PREFACE:
                    raise H2ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 preface")
                del buf[:len(PREFACE)]
                self._preface = True
            read_frames(buf, self._on_frame)
        except (H2ProtocolError, hpack.HpackError) as err:
            code = (err.code if isinstance(err, H2ProtocolError)
                    else ENHANCE_YOUR_CALM if isinstance(err, hpack.HeaderListTooLarge)
                    else COMPRESSION_ERROR)
            log.debug("h2.connection_error", peer=self.peer, error=str(err))
            self._goaway(code, str(err).encode()[:200])
            self._flush()
            self._abort_connection()
        except Exception:  # a bug here fails this connection, not the server
            log.exception("h2.connection_failed", peer=self.peer)
            self._goaway(INTERNAL_ERROR)
            self._flush()
            self._abort_connection()

    # -- frames in -----------------------------------------------------------------------

    def _on_rst_stream(self, stream_id: int, code: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self._reset_by_peer(stream)
            if not self._resets.take():  # CVE-2023-44487
                raise H2ProtocolError(ENHANCE_YOUR_CALM, "too many streams reset")

    def _on_goaway(self, code: int, debug: bytes) -> None:
        self._going_away = True

    def _on_initial_window(self, delta: int) -> None:
        for stream in self.streams.values():
            stream.send_window += delta

    def _on_peer_settings(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._unblock()

    def _on_connection_credit(self) -> None:
        self._unblock()

    def _on_stream_credit(self, stream_id: int, increment: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        stream.send_window += increment
        if not increment or stream.send_window > MAX_WINDOW:
            self._reset(stream, FLOW_CONTROL_ERROR if increment else PROTOCOL_ERROR)
            return
        self._send_pending(stream)

    def _on_header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self._decoder.decode(block)  # always, to keep the table in step
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client end its side
            if not flags & END_STREAM:
                raise H2ProtocolError(PROTOCOL_ERROR, "second HEADERS without END_STREAM")
            self._end_remote(stream)
            return
        if stream_id % 2 == 0 or stream_id <= self._last_id:
            if stream_id % 2 == 0 or stream_id > self._last_id:
                raise H2ProtocolError(PROTOCOL_ERROR, f"bad stream id {stream_id}")
            return  # a stream that is already closed; nothing to do
        self._last_id = stream_id
        stream = Stream(self, stream_id, headers, self._peer_initial_window)
        if (self._going_away or self.server.closing or len(self.streams) >= MAX_CONCURRENT_STREAMS
                or self._pending_bytes > PENDING_RESPONSE_LIMIT):
            self._write(frame(RST_STREAM, 0, stream_id, U32.pack(REFUSED_STREAM)))
            return
        self.streams[stream_id] = stream
        stream.remote_closed = bool(flags & END_STREAM)  # no RST for a refused call then
        self._start_call(stream, headers)
        if flags & END_STREAM and not stream.local_closed:
            self._end_remote(stream)

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise H2ProtocolError(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        if flags & PADDED:
            if not payload or payload[0] >= size:
                raise H2ProtocolError(PROTOCOL_ERROR, "bad DATA padding")
            payload = payload[1:size - payload[0]]
        self._recv_window -= size
        if self._recv_window < 0:
            raise H2ProtocolError(FLOW_CONTROL_ERROR, "connection window exceeded")
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            if stream_id > self._last_id:
                raise H2ProtocolError(PROTOCOL_ERROR, "DATA on an idle stream")
            self._credit(size)
            return  # a stream this side already finished or reset
        stream.recv_window -= size
        if stream.recv_window < 0:
            self._credit(size)
            self._reset(stream, FLOW_CONTROL_ERROR)
            return
        stream.unacked += size
        # Connection credit goes back for what the handler has consumed, not for what
        # waits in the stream (an incomplete message, messages not taken yet): clients
        # that never finish their messages cannot make this side buffer more than the
        # connection window.
        if payload:
            self._receive_messages(stream, payload)
        if stream.local_closed:  # ended while receiving: its held bytes went back then
            self._credit(size)
        else:
            held = len(stream.buffer) + stream.queued
            give = stream.held + size - held  # framing, padding, messages already taken
            stream.held = held
            if give > 0:
                self._conn_unacked += give
                if self._conn_unacked >= self._conn_window // 2:
                    self._credit(0)
        if self._recv_window + self._conn_unacked < self._conn_window // 2:
            self._shed_incomplete()
        if not flags & END_STREAM and stream.unacked >= STREAM_WINDOW // 2 \
                and stream.queued < STREAM_WINDOW:
            # Credit goes back as data arrives, unless the handler has a window's worth of
            # messages it has not taken yet (then _Requests gives it back as it takes them).
            self._ack_stream(stream)
        if flags & END_STREAM and stream_id in self.streams:
            self._end_remote(stream)

    def _shed_incomplete(self) -> None:
        """More than half the connection window is held: reset the streams with the largest
        incomplete messages until it is not. Without this, messages sent interleaved and
        never finished would hold the window and stall every call on the connection."""
        while self._recv_window + self._conn_unacked < self._conn_window // 2:
            victim = max((s for s in self.streams.values() if s.buffer and not s.local_closed),
                         key=lambda s: len(s.buffer), default=None)
            if victim is None:
                return
            log.info("h2.incomplete_message_dropped", peer=self.peer, stream=victim.id,
                     buffered=len(victim.buffer))
            self._reset(victim, ENHANCE_YOUR_CALM)

    def _credit(self, size: int) -> None:
        self._conn_unacked += size
        if self._conn_unacked >= self._conn_window // 2:
            self._write(frame(WINDOW_UPDATE, 0, 0, U32.pack(self._conn_unacked)))
            self._recv_window += self._conn_unacked
            self._conn_unacked = 0

    def _release(self, stream: Stream, size: int) -> None:
        """Give back up to ``size`` of the stream's held bytes to the connection window."""
        size = min(size, stream.held)
        if size > 0:
            stream.held -= size
            self._credit(size)

    def _ack_stream(self, stream: Stream) -> None:
        if stream.unacked and not stream.remote_closed:
            self._write(frame(WINDOW_UPDATE, 0, stream.id, U32.pack(stream.unacked)))
            stream.recv_window += stream.unacked
        stream.unacked = 0

    def _receive_messages(self, stream: Stream, payload: bytes) -> None:
        buf = stream.buffer
        limit = self.server.max_receive
        if not buf and len(payload) >= 5 and payload[0] == 0 \
                and U32.unpack_from(payload, 1)[0] == len(payload) - 5 <= limit:
            self._deliver(stream, payload[5:])  # one whole message: the common case
            return
        buf += payload
        while len(buf) >= 5:
            if buf[0] != 0:
                self._finish(stream, StatusCode.UNIMPLEMENTED,
                             "grpc: compressed messages are not supported")
                return
            length = U32.unpack_from(buf, 1)[0]
            if length > limit:
                self._finish(stream, StatusCode.RESOURCE_EXHAUSTED,
                             f"grpc: received message larger than max ({length} vs. {limit})")
                return
            if len(buf) < 5 + length:
                return
            message = bytes(buf[5:5 + length])
            del buf[:5 + length]
            self._deliver(stream, message)
            if stream.local_closed:
                return

    def _deliver(self, stream: Stream, message: bytes) -> None:
        stream.inbox.append(message)
        stream.queued += len(message)
        handler = stream.handler
        if handler is None:
            return
        if handler.request_streaming:
            stream.wake()
        elif len(stream.inbox) > 1:
            self._finish(stream, StatusCode.INTERNAL, "Too many requests for a unary call")

    def _end_remote(self, stream: Stream) -> None:
        stream.remote_closed = True
        stream.unacked = 0
        if stream.buffer and not stream.local_closed:
            self._finish(stream, StatusCode.INTERNAL, "Incomplete message")
            return
        handler = stream.handler
        if handler is None:
            return
        if handler.request_streaming:
            stream.wake()
        elif stream.task is None and not stream.local_closed:
            if len(stream.inbox) != 1:
                self._finish(stream, StatusCode.INTERNAL, "No request for a unary call")
                return
            stream.task = self.loop.create_task(self._run(stream))
        if stream.local_closed:
            self._forget(stream)

    # -- calls ---------------------------------------------------------------------------

    def _start_call(self, stream: Stream, headers: list[tuple[bytes, bytes]]) -> None:
        path = b""
        timeout = b""
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b"grpc-timeout":
                timeout = value
            elif name == b"grpc-encoding" and value != b"identity":
                self._finish(stream, StatusCode.UNIMPLEMENTED,
                             f"grpc: compression {value.decode('latin-1')} is not supported")
                return
        method = path.decode("latin-1")
        try:
            handler = self.server.resolve(CallDetails(method, headers))
        except Exception:  # a resolver bug must not take the connection down
            log.exception("h2.resolve_failed", method=method)
            handler = None
        if handler is None:
            self._finish(stream, StatusCode.UNIMPLEMENTED, "Method not found!")
            return
        stream.handler = handler
        if timeout:
            seconds = _parse_timeout(timeout)
            if seconds is not None:
                stream.deadline = time.monotonic() + seconds
                stream.timer = self.loop.call_later(seconds, self._expire, stream)
        if handler.request_streaming:
            stream.task = self.loop.create_task(self._run(stream))

    def _expire(self, stream: Stream) -> None:
        stream.timer = None
        if not stream.local_closed:
            task = stream.task
            self._finish(stream, StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            if task is not None:
                task.cancel()

    async def _run(self, stream: Stream) -> None:
        handler = stream.handler
        context = ServicerContext(stream)
        deserialize = handler.request_deserializer or _identity
        serialize = handler.response_serializer or _identity
        try:
            if handler.request_streaming:
                request: Any = _Requests(self, stream, deserialize)
            else:
                raw = stream.inbox.popleft()
                stream.queued = 0
                if stream.held:  # the request is all this stream holds
                    self._conn_unacked += stream.held
                    stream.held = 0
                    if self._conn_unacked >= self._conn_window // 2:
                        self._credit(0)
                try:
                    request = deserialize(raw)
                except Exception:  # noqa: BLE001 - any parse failure is the client's
                    raise RpcAbort(StatusCode.INTERNAL,
                                   "Exception deserializing request!") from None
            if handler.response_streaming:
                fn = handler.stream_stream if handler.request_streaming else handler.unary_stream
                responses = fn(request, context)
                try:
                    async for response in responses:
                        if stream.local_closed or stream.trailer is not None:
                            break
                        self._send_message(stream, serialize(response))
                        if stream.pending or self._paused:
                            await self._drained(stream)
                finally:
                    aclose = getattr(responses, "aclose", None)
                    if aclose is not None:
                        await aclose()
                self._finish(stream, stream.code, stream.details)
            else:
                fn = handler.stream_unary if handler.request_streaming else handler.unary_unary
                response = await fn(request, context)
                if not stream.local_closed:
                    if stream.code is not StatusCode.OK:
                        self._finish(stream, stream.code, stream.details)
                    elif response is None:
                        self._finish(stream, StatusCode.UNKNOWN,
                                     "the method handler returned no response")
                    else:
                        self._send_unary(stream, serialize(response))
        except RpcAbort as abort:
            self._finish(stream, abort.code, abort.details)
        except asyncio.CancelledError:
            if not stream.local_closed and not stream.reset:
                # Cut off by a stopping server: UNAVAILABLE makes etcd's clients retry
                # elsewhere (they give up on a watch that ends CANCELLED).
                if self.server.closing:
                    self._finish(stream, StatusCode.UNAVAILABLE, "server shutting down")
                else:
                    self._finish(stream, StatusCode.CANCELLED, "Cancelled")
            raise
        except Exception as err:  # a handler bug fails its call only
            log.exception("h2.handler_failed", method=_path(stream))
            self._finish(stream, StatusCode.UNKNOWN, f"Unexpected {type(err)}: {err}")

    # -- frames out ----------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if not self._out:
            self.loop.call_soon(self._flush)
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= FLUSH_AT:
            self._flush()  # the transport sees the volume now (pause_writing)

    def _flush(self) -> None:
        if self._out and not self._closed and self.transport is not None:
            self.transport.write(b"".join(self._out))
        self._out.clear()
        self._out_size = 0

    def _send_unary(self, stream: Stream, data: bytes) -> None:
        """A whole unary response: headers, the message, trailers — one write when the
        windows allow it."""
        message = grpc_message(data)
        size = len(message)
        if (not stream.pending and size <= stream.send_window and size <= self._send_window
                and size <= self._peer_max_frame):
            stream.send_window -= size
            self._send_window -= size
            stream.headers_sent = stream.local_closed = True
            self._write(frame(HEADERS, END_HEADERS, stream.id, _RESPONSE_HEADERS)
                        + frame(DATA, 0, stream.id, message)
                        + frame(HEADERS, END_HEADERS | END_STREAM, stream.id, _TRAILERS_OK))
            self._closed_locally(stream)
            return
        self._send_message(stream, data)
        self._finish(stream, StatusCode.OK, "")

    def _send_message(self, stream: Stream, data: bytes) -> None:
        if not stream.headers_sent:
            stream.headers_sent = True
            self._write(frame(HEADERS, END_HEADERS, stream.id, _RESPONSE_HEADERS))
        message = memoryview(grpc_message(data))
        if (self._pending_bytes and self._pending_bytes + len(message) > PENDING_RESPONSE_LIMIT
                and (stream.pending or len(message) > min(stream.send_window,
                                                          self._send_window))):
            # The client does not take what it asked for: drop this response rather than
            # hold it (one response of any size may wait when nothing else does).
            log.info("h2.response_dropped", peer=self.peer, stream=stream.id,
                     pending=self._pending_bytes)
            self._reset(stream, ENHANCE_YOUR_CALM)
            return
        stream.pending.append(message)
        self._pending_bytes += len(message)
        self._send_pending(stream)

    def _send_pending(self, stream: Stream) -> None:
        """Send what flow control allows of the stream's queued data, then its trailers."""
        pending = stream.pending
        while pending:
            chunk = pending[0]
            n = min(len(chunk), stream.send_window, self._send_window, self._peer_max_frame)
            if n <= 0:
                self._blocked[stream.id] = stream
                return
            stream.send_window -= n
            self._send_window -= n
            self._pending_bytes -= n
            if n == len(chunk):
                pending.popleft()
                self._write(frame(DATA, 0, stream.id, chunk))
            else:
                pending[0] = chunk[n:]  # a view: no copy of the rest
                self._write(frame(DATA, 0, stream.id, chunk[:n]))
        self._blocked.pop(stream.id, None)
        if stream.trailer is not None:
            self._write(stream.trailer)
            stream.trailer = None
            self._closed_locally(stream)
        self._wake_drain(stream)

    def _unblock(self) -> None:
        for stream in list(self._blocked.values()):
            if self._send_window <= 0:
                return
            self._send_pending(stream)

    async def _drained(self, stream: Stream) -> None:
        while (stream.pending or self._paused) and not stream.reset and not self._closed:
            stream.drain = self.loop.create_future()
            await stream.drain

    def _wake_drain(self, stream: Stream) -> None:
        drain = stream.drain
        if drain is not None and not drain.done() and not self._paused:
            drain.set_result(None)

    def _finish(self, stream: Stream, code: StatusCode, details: str) -> None:
        """End the call with a status: trailers after any queued data, or a trailers-only
        response when nothing was sent yet."""
        if stream.local_closed or stream.trailer is not None or stream.reset:
            return
        if not stream.headers_sent:
            stream.headers_sent = True
            block = _RESPONSE_HEADERS + (_TRAILERS_OK if code is StatusCode.OK
                                         else status_block(code, details))
            stream.local_closed = True
            self._write(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block))
            self._closed_locally(stream)
            return
        block = _TRAILERS_OK if code is StatusCode.OK else status_block(code, details)
        stream.trailer = frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block)
        self._send_pending(stream)

    def _closed_locally(self, stream: Stream) -> None:
        stream.local_closed = True
        if stream.held:
            self._release(stream, stream.held)
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        task = stream.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()  # the server ended the call (bad request, deadline): stop it
        drain = stream.drain
        if drain is not None and not drain.done():
            drain.set_result(None)
        if not stream.remote_closed:
            # The response is complete; the client need not send the rest (RFC 9113 8.1).
            self._write(frame(RST_STREAM, 0, stream.id, U32.pack(NO_ERROR)))
            stream.remote_closed = True
            stream.wake()
        self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        if stream.local_closed and stream.remote_closed:
            self.streams.pop(stream.id, None)
            self._blocked.pop(stream.id, None)
            if not self.streams and (self._going_away or self.server.closing):
                self.server.idle.set()

    def _reset(self, stream: Stream, code: int) -> None:
        self._write(frame(RST_STREAM, 0, stream.id, U32.pack(code)))
        self.streams.pop(stream.id, None)
        self._reset_by_peer(stream)

    def _reset_by_peer(self, stream: Stream) -> None:
        stream.reset = stream.remote_closed = stream.local_closed = True
        self._pending_bytes -= sum(len(chunk) for chunk in stream.pending)
        stream.pending.clear()
        self._release(stream, stream.held)
        stream.trailer = None
        self._blocked.pop(stream.id, None)
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        stream.wake()
        drain = stream.drain
        if drain is not None and not drain.done():
            drain.set_result(None)
        if not self.streams and self.server.closing:
            self.server.idle.set()

    def _goaway(self, code: int, debug: bytes = b"") -> None:
        self._going_away = True
        self._write(frame(GOAWAY, 0, 0, U32.pack(self._last_id) + U32.pack(code) + debug))

    def _abort_connection(self) -> None:
        transport = self.transport
        if transport is not None and not self._closed:
            transport.close()  # flushes the GOAWAY; a peer that does not read is cut off
            self.loop.call_later(1.0, transport.abort)

    def go_away(self) -> None:
        """Graceful shutdown: no new streams; the ones open run to their end."""
        if not self._closed:
            self._goaway(NO_ERROR)

    def close(self) -> None:
        self._flush()
        if self.transport is not None and not self._closed:
            self.transport.close()


class _Requests:
    """A request-streaming call's messages as an async iterator; a message taken out of
    the inbox gives its bytes back to the client's stream window."""

    __slots__ = ("_conn", "_deserialize", "_stream")

    def __init__(self, conn: Connection, stream: Stream,
                 deserialize: Callable[[bytes], Any]) -> None:
        self._conn = conn
        self._stream = stream
        self._deserialize = deserialize

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        stream = self._stream
        while not stream.inbox:
            if stream.remote_closed:
                raise StopAsyncIteration
            stream.waiter = self._conn.loop.create_future()
            await stream.waiter
            stream.waiter = None
        raw = stream.inbox.popleft()
        stream.queued -= len(raw)
        self._conn._release(stream, len(raw))
        if stream.unacked >= STREAM_WINDOW // 2 and stream.queued < STREAM_WINDOW:
            self._conn._ack_stream(stream)
        try:
            return self._deserialize(raw)
        except Exception:  # noqa: BLE001 - any parse failure is the client's
            self._conn._finish(stream, StatusCode.INTERNAL,
                               "Exception deserializing request!")
            raise asyncio.CancelledError() from None


def _identity(data: Any) -> Any:
    return data


def _parse_timeout(value: bytes) -> float | None:
    unit = _TIMEOUT_UNITS.get(value[-1]) if value else None
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


def _path(stream: Stream) -> str:
    for name, value in stream.headers:
        if name == b":path":
            return value.decode("latin-1")
    return ""


def split_address(address: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` → (host, port); no host: every interface."""
    try:
        host, port = parse_hostport(address)
    except ValueError:
        raise OSError(f"cannot listen on {address}: not host:port") from None
    return host or "0.0.0.0", port


class H2Server:
    """Serves gRPC calls on one listening address; ``resolve`` picks each call's handler."""

    def __init__(self, resolve: Resolver, max_receive: int) -> None:
        self.resolve = resolve
        self.max_receive = max_receive
        self.connections: set[Connection] = set()
        self.closing = False
        self.idle = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, address: str) -> int:
        """Listen on ``address``; returns the bound port. Raises OSError if it cannot."""
        host, port = split_address(address)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self), host, port,
                                                reuse_address=True)
        sockets: Iterable[Any] = getattr(self._server, "sockets", None) or ()
        for sock in sockets:
            return int(sock.getsockname()[1])
        return port

    async def stop(self, grace: float | None) -> None:
        """Stop listening, send GOAWAY, let open calls finish for ``grace`` seconds, then
        cancel what is left and close every connection."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        conns = list(self.connections)
        for conn in conns:
            conn.go_away()
            conn._flush()
        if grace and any(conn.streams for conn in conns):
            self.idle.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    while any(conn.streams for conn in self.connections):
                        self.idle.clear()
                        await self.idle.wait()
        tasks = []
        for conn in list(self.connections):
            for stream in list(conn.streams.values()):
                if stream.task is not None and not stream.task.done():
                    tasks.append(stream.task)
                    stream.task.cancel()
        if tasks:  # they end their calls UNAVAILABLE; close after those trailers are queued
            await asyncio.gather(*tasks, return_exceptions=True)
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()


if TYPE_CHECKING:
    from coord.rpc.handlers import Context

    def _is_a_context(context: ServicerContext) -> Context:
        """mypy checks that the services can be given this context."""
        return context
