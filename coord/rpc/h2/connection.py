"""One server connection: the HTTP/2 state machine for frames coming in — the preface and
handshake, streams opened, refused and reset, request data under flow control and the
per-connection limits (docs/security.md) — on top of :class:`CallDispatch`, which runs the
calls and writes their responses."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from coord.rpc.h2 import hpack
from coord.rpc.h2.call import Stream
from coord.rpc.h2.dispatch import CallDispatch, ServerState
from coord.rpc.h2.frames import (
    ACK,
    COMPRESSION_ERROR,
    CONNECTION_WINDOW,
    DATA,
    DEFAULT_WINDOW,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    GOAWAY,
    HEADERS,
    INTERNAL_ERROR,
    MAX_FRAME,
    MAX_WINDOW,
    NO_ERROR,
    PADDED,
    PREFACE,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    RST_STREAM,
    SETTING,
    SETTINGS,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_HEADER_LIST_SIZE,
    STREAM_CLOSED,
    STREAM_WINDOW,
    U32,
    WINDOW_UPDATE,
    H2ProtocolError,
    HeaderBlocks,
    enable_keepalive,
    frame,
    read_frames,
)
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
from coord.rpc.h2.streams import (
    CLOSED_RECEIVE,
    RECEIVE,
    RECEIVED_END,
    Closed,
    ClosedStreams,
    State,
    Verdict,
    opened,
)
from coord.rpc.h2.tls import common_name
from coord.rpc.h2.validate import malformed
from coord.rpc.status import StatusCode

log = structlog.get_logger("coord.rpc.h2")


class Connection(CallDispatch):
    """One client connection. All state is touched on the event loop only."""

    def __init__(self, server: ServerState) -> None:
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
        self._closed_streams = ClosedStreams()
        self._settings_seen = False
        """The client's first frame, SETTINGS, arrived (RFC 9113 3.4)."""

    # -- transport callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            host = peer[0]
            self.peer = (f"ipv6:[{host}]:{peer[1]}" if ":" in host
                         else f"ipv4:{host}:{peer[1]}")
        allowed_cn = self.server.tls.allowed_cn if self.server.tls is not None else ""
        if allowed_cn and common_name(transport.get_extra_info("peercert")) != allowed_cn:
            log.warning("h2.peer_cn_refused", peer=self.peer, allowed_cn=allowed_cn)
            transport.abort()  # type: ignore[attr-defined]
            return
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
            read_frames(buf, self._on_frame if self._settings_seen else self._first_frames)
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

    def _first_frames(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        """The frames of the first read after the preface: the very first must be the
        client's SETTINGS (RFC 9113 3.4), else the connection ends with PROTOCOL_ERROR."""
        if not self._settings_seen:
            if kind != SETTINGS or flags & ACK:
                raise H2ProtocolError(PROTOCOL_ERROR, "the first frame is not SETTINGS")
            self._settings_seen = True
        self._on_frame(kind, flags, stream_id, payload)

    def _late_frame(self, kind: int, stream_id: int) -> None:
        """A frame for a stream not in the table: idle or closed. RFC 9113 5.1 says what it
        means (:mod:`coord.rpc.h2.streams`); DATA's bytes were already given back."""
        if stream_id % 2 == 0 or stream_id > self._last_id:
            where = "idle"
            verdict, code = RECEIVE[State.IDLE, kind]
        else:
            where = "closed"
            verdict, code = CLOSED_RECEIVE[self._closed_streams.cause(stream_id), kind]
        if verdict is Verdict.CONNECTION_ERROR:
            raise H2ProtocolError(code, f"frame type {kind} on {where} stream {stream_id}")
        if verdict is Verdict.STREAM_ERROR and kind != RST_STREAM:  # never RST for an RST
            self._write(frame(RST_STREAM, 0, stream_id, U32.pack(code)))

    def _stream_error(self, stream_id: int, code: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._reset(stream, code)
        elif stream_id % 2 == 0 or stream_id > self._last_id:
            # An idle stream cannot be reset (RFC 9113 6.4): the connection ends instead.
            raise H2ProtocolError(code, f"stream error on idle stream {stream_id}")
        else:
            self._write(frame(RST_STREAM, 0, stream_id, U32.pack(code)))

    def _on_rst_stream(self, stream_id: int, code: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            self._late_frame(RST_STREAM, stream_id)
            return
        stream.closed_how = Closed.RESET_RECEIVED
        self._closed_streams.add(stream_id, Closed.RESET_RECEIVED)
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
            self._late_frame(WINDOW_UPDATE, stream_id)
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
            if stream.remote_closed:  # half-closed (remote): it already ended its side
                self._reset(stream, STREAM_CLOSED)
                return
            if not flags & END_STREAM:
                raise H2ProtocolError(PROTOCOL_ERROR, "second HEADERS without END_STREAM")
            if any(name[:1] == b":" for name, _ in headers):  # RFC 9113 8.1
                self._reset(stream, PROTOCOL_ERROR)
                return
            self._end_remote(stream)
            return
        if stream_id % 2 == 0 or stream_id <= self._last_id:
            if stream_id % 2 == 0:
                raise H2ProtocolError(PROTOCOL_ERROR, f"bad stream id {stream_id}")
            self._late_frame(HEADERS, stream_id)
            return
        self._last_id = stream_id  # idle -> open: every lower idle stream is closed (5.1.1)
        reason = malformed(headers)
        if reason is not None:  # RFC 9113 8.1.1: a stream error, the connection goes on
            log.debug("h2.malformed_request", peer=self.peer, stream=stream_id, reason=reason)
            self._write(frame(RST_STREAM, 0, stream_id, U32.pack(PROTOCOL_ERROR)))
            self._closed_streams.add(stream_id, Closed.RESET_SENT)
            return
        if (self._going_away or self.server.closing or len(self.streams) >= MAX_CONCURRENT_STREAMS
                or self._pending_bytes > PENDING_RESPONSE_LIMIT):
            self._write(frame(RST_STREAM, 0, stream_id, U32.pack(REFUSED_STREAM)))
            self._closed_streams.add(stream_id, Closed.RESET_SENT)
            return
        stream = Stream(self, stream_id, headers, self._peer_initial_window)
        self.streams[stream_id] = stream
        stream.state = opened(bool(flags & END_STREAM))  # no RST for a refused call then
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
            self._credit(size)  # counted against the connection window all the same
            if stream is not None:  # half-closed (remote)
                self._reset(stream, STREAM_CLOSED)
            else:
                self._late_frame(DATA, stream_id)
            return
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
            # messages it has not taken yet (then Requests gives it back as it takes them).
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
        stream.state = RECEIVED_END.get(stream.state, stream.state)
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

    def _forget(self, stream: Stream) -> None:
        if stream.local_closed and stream.remote_closed:
            if self.streams.pop(stream.id, None) is not None:
                self._closed_streams.add(stream.id, stream.closed_how)
            self._blocked.pop(stream.id, None)
            if not self.streams and (self._going_away or self.server.closing):
                self.server.idle.set()

    def _reset(self, stream: Stream, code: int) -> None:
        self._write(frame(RST_STREAM, 0, stream.id, U32.pack(code)))
        stream.closed_how = Closed.RESET_SENT
        if self.streams.pop(stream.id, None) is not None:
            self._closed_streams.add(stream.id, Closed.RESET_SENT)
        self._reset_by_peer(stream)

    def _reset_by_peer(self, stream: Stream) -> None:
        stream.reset = True
        stream.state = State.CLOSED
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
