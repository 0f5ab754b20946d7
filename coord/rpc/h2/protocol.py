"""What both ends of an HTTP/2 connection do with incoming frames, without I/O: frames
checked, PINGs answered, SETTINGS and WINDOW_UPDATEs applied, header blocks reassembled;
the rest goes to the hooks the server's core (:mod:`coord.rpc.h2.core`) and the peer
client (:mod:`coord.rpc.h2.client`) implement. Output is only ever ``_write``."""

from __future__ import annotations

from coord.rpc.h2.frames import (
    ACK,
    CONTINUATION,
    DATA,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    MAX_FRAME,
    MAX_WINDOW,
    PING,
    PRIORITY,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    RST_STREAM,
    SETTING,
    SETTINGS,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_FRAME_SIZE,
    U32,
    WINDOW_UPDATE,
    H2ProtocolError,
    HeaderBlocks,
    frame,
)
from coord.rpc.h2.limits import (
    Bucket,
)


class FrameHandler:
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
            elif key == SETTINGS_ENABLE_PUSH:
                if value > 1:
                    raise H2ProtocolError(PROTOCOL_ERROR, "bad ENABLE_PUSH")
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not MAX_FRAME <= value <= 2**24 - 1:
                    raise H2ProtocolError(PROTOCOL_ERROR, "bad max frame size")
                self._peer_max_frame = value
        self._write(frame(SETTINGS, ACK, 0))
        self._on_peer_settings()

    def _stream_error(self, stream_id: int, code: int) -> None:
        """A stream error (RFC 9113 5.4.2): RST_STREAM with ``code``; the subclass ends
        its side of the stream too."""
        self._write(frame(RST_STREAM, 0, stream_id, U32.pack(code)))

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
        elif kind == PRIORITY:
            # Priorities are ignored (RFC 9113 5.3.2), but the frame is still checked (6.3).
            if not stream_id:
                raise H2ProtocolError(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                self._stream_error(stream_id, FRAME_SIZE_ERROR)
            elif U32.unpack_from(payload)[0] & 0x7FFFFFFF == stream_id:
                self._stream_error(stream_id, PROTOCOL_ERROR)
        elif kind == PUSH_PROMISE:
            raise H2ProtocolError(PROTOCOL_ERROR, "PUSH_PROMISE (push is disabled)")
        # Unknown frame types are ignored (RFC 9113 5.5).
