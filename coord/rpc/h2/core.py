"""A server connection's sans-I/O core (RFC 9113): bytes in (:meth:`ServerCore.receive`),
bytes out (:meth:`~coord.rpc.h2.outgoing.StreamSender.data_to_send`), and what happened to
the calls as hooks (a request opened, complete, reset). It keeps the preface and the
client's SETTINGS first, each stream's state by the table of section 5.1
(:mod:`coord.rpc.h2.streams`), requests checked per section 8 (:mod:`coord.rpc.h2.validate`),
flow control both ways and the per-connection limits of docs/security.md.

No transport, no event loop, no clock but the rate limits' buckets: the asyncio side
(:class:`coord.rpc.h2.dispatch.CallDispatch` runs the calls,
:class:`coord.rpc.h2.connection.Connection` is the protocol) subclasses it, and the fuzz
test (tests/api/test_h2_fuzz.py) drives it alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import structlog

from coord.rpc.h2 import hpack
from coord.rpc.h2.call import CallDetails, Stream
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
    frame,
    read_frames,
)
from coord.rpc.h2.limits import (
    MAX_CONCURRENT_STREAMS,
    MAX_HEADER_LIST_SIZE,
    PENDING_RESPONSE_LIMIT,
    PING_BURST,
    PING_RATE,
    RESET_BURST,
    RESET_RATE,
    SETTINGS_BURST,
    SETTINGS_RATE,
    Bucket,
)
from coord.rpc.h2.outgoing import StreamSender
from coord.rpc.h2.streams import (
    CLOSED,
    CLOSED_RECEIVE,
    HALF_CLOSED_REMOTE,
    LOCAL_CLOSED,
    OPEN,
    RECEIVE,
    RECEIVED_END,
    REMEMBERED,
    RESET_RECEIVED,
    RESET_SENT,
    ClosedStreams,
    State,
    Verdict,
)
from coord.rpc.h2.validate import Head, field_verdict, request_head
from coord.rpc.status import StatusCode

log = structlog.get_logger("coord.rpc.h2")


class CoreServer(Protocol):
    """What a connection's core needs of its server (:class:`coord.rpc.h2.server.H2Server`)."""

    resolve: Callable[[CallDetails], Any]
    max_receive: int
    closing: bool


class ServerCore(StreamSender):
    """One client connection's HTTP/2 state, without I/O."""

    # The core's state in slots, not in the instance dict: CPython 3.11 keeps an instance's
    # attributes in its compact shared-key layout only up to about 30 of them, and a
    # connection (this state, the frame handler's and the asyncio side's) has more; past
    # the limit every access to ``self`` on the per-frame paths is a plain dict lookup.
    # Attributes added later without a slot still work (the bases have no slots).
    __slots__ = ("_blocked", "_blocks", "_buf", "_closed", "_closed_streams", "_conn_unacked",
                 "_conn_window", "_credit_total", "_decoder", "_going_away", "_last_id",
                 "_out", "_out_size", "_paused", "_peer_initial_window", "_peer_max_frame",
                 "_pending_bytes", "_pings", "_preface", "_recv_window", "_resets",
                 "_send_window", "_sent_at_ping", "_settings_frames", "_settings_seen", "peer",
                 "server", "streams")

    def __init__(self, server: CoreServer) -> None:
        self.server = server
        self.peer = ""
        self._buf = bytearray()
        self._preface = False
        self._decoder = hpack.Decoder(max_list_size=MAX_HEADER_LIST_SIZE, check=field_verdict)
        self.streams: dict[int, Stream] = {}
        self._last_id = 0
        self._out = []
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
        self._blocked: dict[int, Stream] = {}
        self._paused = False
        """The transport asked this side to stop writing (set by the I/O side)."""
        self._closed = False
        """The connection is gone (set by the I/O side)."""
        self._going_away = False
        self._blocks = HeaderBlocks()
        self._closed_streams = ClosedStreams()
        self._settings_seen = False
        """The client's first frame, SETTINGS, arrived (RFC 9113 3.4)."""
        self._credit_total = self._sent_at_ping = 0  # the frame handler's PING accounting

    def start(self) -> None:
        """This side's connection preface: SETTINGS (RFC 9113 3.4) and the connection
        window raised to its size."""
        settings = (SETTING.pack(SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW)
                    + SETTING.pack(SETTINGS_ENABLE_PUSH, 0)
                    + SETTING.pack(SETTINGS_MAX_CONCURRENT_STREAMS, MAX_CONCURRENT_STREAMS)
                    + SETTING.pack(SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST_SIZE))
        self._write(frame(SETTINGS, 0, 0, settings)
                    + frame(WINDOW_UPDATE, 0, 0, U32.pack(self._conn_window - DEFAULT_WINDOW)))

    def receive(self, data: bytes) -> None:
        """Bytes from the client: the preface, then frames, each acted on at once (calls
        started, messages delivered, answers written). Raises :class:`H2ProtocolError` or
        :class:`hpack.HpackError` for a connection error; the caller then ends the
        connection (:meth:`connection_error`)."""
        buf = self._buf
        buf += data
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

    def connection_error(self, err: H2ProtocolError | hpack.HpackError) -> None:
        """GOAWAY with the code for ``err`` (the I/O side closes the connection after)."""
        code = (err.code if isinstance(err, H2ProtocolError)
                else ENHANCE_YOUR_CALM if isinstance(err, hpack.HeaderListTooLarge)
                else COMPRESSION_ERROR)
        log.debug("h2.connection_error", peer=self.peer, error=str(err))
        self._goaway(code, str(err).encode()[:200])

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
        stream.closed_how = RESET_RECEIVED
        self._closed_streams.add(stream_id, RESET_RECEIVED)
        self._reset_by_peer(stream)
        if not self._resets.take():  # CVE-2023-44487
            raise H2ProtocolError(ENHANCE_YOUR_CALM, "too many streams reset")

    def _on_goaway(self, code: int, debug: bytes) -> None:
        self._going_away = True

    def _on_initial_window(self, delta: int) -> None:
        for stream in self.streams.values():
            stream.send_window += delta
            if stream.send_window > MAX_WINDOW:  # RFC 9113 6.9.2
                raise H2ProtocolError(FLOW_CONTROL_ERROR, "stream window overflow")

    def _on_peer_settings(self) -> None:
        self._handshake_done()
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
        # Always decoded, to keep the table in step; each field comes with its section 8
        # verdict, kept with its table entry (a field sent indexed is not checked again).
        headers, verdicts = self._decoder.decode_checked(block)
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client end its side
            if stream.state >= HALF_CLOSED_REMOTE:  # half-closed (remote): the client ended
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
        head = request_head(headers, verdicts)
        if isinstance(head, str):  # RFC 9113 8.1.1: a stream error, the connection goes on
            log.debug("h2.malformed_request", peer=self.peer, stream=stream_id, reason=head)
            self._write(frame(RST_STREAM, 0, stream_id, U32.pack(PROTOCOL_ERROR)))
            self._closed_streams.add(stream_id, RESET_SENT)
            return
        if (self._going_away or self.server.closing or len(self.streams) >= MAX_CONCURRENT_STREAMS
                or self._pending_bytes > PENDING_RESPONSE_LIMIT):
            self._write(frame(RST_STREAM, 0, stream_id, U32.pack(REFUSED_STREAM)))
            self._closed_streams.add(stream_id, RESET_SENT)
            return
        stream = Stream(self, stream_id, headers, self._peer_initial_window)
        self.streams[stream_id] = stream
        stream.state = HALF_CLOSED_REMOTE if flags & END_STREAM else OPEN  # idle: opened
        self._start_call(stream, headers, head)
        if flags & END_STREAM and stream.state not in LOCAL_CLOSED:
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
        if stream is None or stream.state >= HALF_CLOSED_REMOTE:
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
        if stream.state in LOCAL_CLOSED:  # ended while receiving: held bytes went back then
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
            victim = max((s for s in self.streams.values()
                          if s.buffer and s.state not in LOCAL_CLOSED),
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
        if stream.unacked and stream.state < HALF_CLOSED_REMOTE:
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
            if stream.state in LOCAL_CLOSED:
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
        if stream.buffer and stream.state not in LOCAL_CLOSED:
            self._finish(stream, StatusCode.INTERNAL, "Incomplete message")
            return
        handler = stream.handler
        if handler is None:
            return
        if handler.request_streaming:
            stream.wake()
        elif stream.task is None and stream.state not in LOCAL_CLOSED:
            if len(stream.inbox) != 1:
                self._finish(stream, StatusCode.INTERNAL, "No request for a unary call")
                return
            self._request_complete(stream)
        if stream.state in LOCAL_CLOSED:
            self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        if stream.state == CLOSED:
            if self.streams.pop(stream.id, None) is not None:
                closed = self._closed_streams  # its add(), inline: once per call
                closed.recent[stream.id] = stream.closed_how
                if len(closed.recent) >= REMEMBERED:
                    closed.age()
            self._blocked.pop(stream.id, None)
            if not self.streams and (self._going_away or self.server.closing):
                self._streams_gone()

    def _reset(self, stream: Stream, code: int) -> None:
        self._write(frame(RST_STREAM, 0, stream.id, U32.pack(code)))
        stream.closed_how = RESET_SENT
        if self.streams.pop(stream.id, None) is not None:
            self._closed_streams.add(stream.id, RESET_SENT)
        self._reset_by_peer(stream)

    def _reset_by_peer(self, stream: Stream) -> None:
        stream.reset = True
        stream.state = CLOSED
        self._pending_bytes -= sum(len(chunk) for chunk in stream.pending)
        stream.pending.clear()
        self._release(stream, stream.held)
        stream.trailer = None
        self._blocked.pop(stream.id, None)
        self._call_reset(stream)
        if not self.streams and self.server.closing:
            self._streams_gone()

    def _goaway(self, code: int, debug: bytes = b"") -> None:
        self._going_away = True
        self._write(frame(GOAWAY, 0, 0, U32.pack(self._last_id) + U32.pack(code) + debug))

    def go_away(self) -> None:
        """Graceful shutdown: no new streams; the ones open run to their end."""
        if not self._closed:
            self._goaway(NO_ERROR)

    # -- what the I/O side provides (no-ops for a bare core) -------------------------------

    def _start_call(self, stream: Stream, headers: list[tuple[bytes, bytes]],
                    head: Head) -> None:
        """A well-formed request opened ``stream`` (``head``: the fields a gRPC server
        reads): resolve and start its call, or end the stream with a status."""

    def _request_complete(self, stream: Stream) -> None:
        """A unary call's one request message and END_STREAM arrived: run its handler."""

    def _call_reset(self, stream: Stream) -> None:
        """The stream was reset (either way) or the connection lost: stop its handler,
        timer and waiters."""

    def _handshake_done(self) -> None:
        """The client's SETTINGS arrived."""

    def _streams_gone(self) -> None:
        """The last stream ended while the connection or the server is going away."""
