"""The response half of a client call's sans-I/O core
(:class:`coord.rpc.h2.client_core.ClientCore`): the server's response headers, its one
message and its trailers read, RST_STREAM and GOAWAY turned into the call's death with the
reason (:class:`StreamCallError`). No I/O."""

from __future__ import annotations

import urllib.parse

from coord.rpc.h2 import hpack
from coord.rpc.h2.frames import (
    CANCEL,
    DATA,
    END_STREAM,
    HEADERS,
    PADDED,
    PROTOCOL_ERROR,
    RST_STREAM,
    U32,
    WINDOW_UPDATE,
    H2ProtocolError,
    frame,
)
from coord.rpc.h2.protocol import FrameHandler
from coord.rpc.h2.streams import RECEIVE, State, Verdict
from coord.rpc.status import StatusCode

STREAM_ID = 1
"""The one stream of a connection."""

RECEIVE_WINDOW = 1 << 20
"""The receive window announced for the stream and the connection. Only the response (one
small message and trailers) comes back, so this is generous; credit is returned as it
arrives, and :data:`MAX_RESPONSE` bounds what is kept."""

MAX_RESPONSE = 4 << 20
"""Response bytes kept (framed); a server sending more fails the call."""

_STATUS_BY_CODE = {code.value: code for code in StatusCode}
_H2_ERRORS = ("NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
              "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM",
              "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
              "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED")


class StreamCallError(ConnectionError):
    """The call is dead (or could not be opened). ``status`` is the gRPC status the server
    ended the call with, or None when it did not send one (connection lost, GOAWAY,
    RST_STREAM, protocol error, closed by this side). ``tls``: the dial failed for a TLS
    reason (then the ``ssl.SSLError`` is the ``__cause__`` when there is one)."""

    def __init__(self, message: str, status: StatusCode | None = None, *,
                 tls: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.tls = tls


class ResponseReader(FrameHandler):
    """Reads the server's side of the call. Its state lives on the call, which also
    provides :meth:`_fail` (the call dies) and the frames-out path."""

    _decoder: hpack.Decoder
    _error: StreamCallError | None
    _headers_seen: bool
    _response_buf: bytearray
    _response: bytes | None
    _max_response: int
    _conn_unacked: int
    _stream_unacked: int

    def _fail(self, reason: str, status: StatusCode | None = None, *,
              reset: int | None = CANCEL, quiet: bool = False) -> None:
        raise NotImplementedError

    def _other_stream(self, kind: int, stream_id: int) -> None:
        """A frame for a stream other than the call's. This client opens stream 1 only and
        disables push, so every other stream is idle (RFC 9113 5.1): PRIORITY is allowed,
        HEADERS would be a stream the server may not open, the rest as the table says."""
        verdict, code = ((Verdict.CONNECTION_ERROR, PROTOCOL_ERROR) if kind == HEADERS
                         else RECEIVE[State.IDLE, kind])
        if verdict is Verdict.CONNECTION_ERROR:
            raise H2ProtocolError(code, f"frame type {kind} on idle stream {stream_id}")

    def _stream_error(self, stream_id: int, code: int) -> None:
        if stream_id != STREAM_ID:  # an idle stream cannot be reset (RFC 9113 6.4)
            raise H2ProtocolError(code, f"stream error on idle stream {stream_id}")
        self._fail(f"stream error from the server's frames ({h2_error_name(code)})",
                   reset=code)

    def _on_rst_stream(self, stream_id: int, code: int) -> None:
        if stream_id != STREAM_ID:
            self._other_stream(RST_STREAM, stream_id)
            return
        self._fail(f"stream reset by the server ({h2_error_name(code)})", reset=None)

    def _on_goaway(self, code: int, debug: bytes) -> None:
        text = debug.decode("utf-8", "replace")
        self._fail(f"server sent GOAWAY ({h2_error_name(code)}){f': {text}' if text else ''}")

    def _on_header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self._decoder.decode(block)  # always, to keep the table in step
        if stream_id != STREAM_ID:
            self._other_stream(HEADERS, stream_id)
        if self._error is not None:
            return
        if not self._headers_seen:
            self._headers_seen = True
            status = _header(headers, b":status")
            if status != b"200":
                self._fail(f"HTTP status {status.decode('latin-1') or 'missing'} from the "
                           "server", reset=None if flags & END_STREAM else CANCEL)
                return
            if not flags & END_STREAM:
                return  # response headers; the trailers come later
        elif not flags & END_STREAM:
            self._fail("trailers without END_STREAM", reset=PROTOCOL_ERROR)
            return
        self._on_trailers(headers)

    def _on_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        raw = _header(headers, b"grpc-status")
        code = _STATUS_BY_CODE.get(int(raw)) if raw.isdigit() else None
        details = urllib.parse.unquote(_header(headers, b"grpc-message").decode("latin-1"),
                                       errors="replace")
        if code is None:
            code = StatusCode.UNKNOWN
            details = details or f"bad grpc-status {raw!r} in the trailers"
        if code is StatusCode.OK:
            buf = self._response_buf
            if (len(buf) >= 5 and buf[0] == 0
                    and U32.unpack_from(buf, 1)[0] == len(buf) - 5):
                self._response = bytes(buf[5:])
            else:
                code = StatusCode.INTERNAL
                details = "the response is not one uncompressed gRPC message"
        reason = (f"call ended by the server with {code.name}" if code is StatusCode.OK
                  else f"call failed with {code.name}{f': {details}' if details else ''}")
        self._fail(reason, code, reset=None)  # the connection closes anyway

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise H2ProtocolError(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self._conn_unacked += size
        if self._conn_unacked >= RECEIVE_WINDOW // 2:
            self._write(frame(WINDOW_UPDATE, 0, 0, U32.pack(self._conn_unacked)))
            self._conn_unacked = 0
        if stream_id != STREAM_ID:
            self._other_stream(DATA, stream_id)
        if self._error is not None:
            return
        if not self._headers_seen:
            self._fail("DATA before the response headers", reset=PROTOCOL_ERROR)
            return
        if flags & PADDED:
            if not payload or payload[0] >= size:
                raise H2ProtocolError(PROTOCOL_ERROR, "bad DATA padding")
            payload = payload[1:size - payload[0]]
        self._response_buf += payload
        if len(self._response_buf) > self._max_response:
            self._fail(f"response over {self._max_response} bytes")
            return
        if flags & END_STREAM:
            self._fail("the response ended without trailers", reset=None)
            return
        self._stream_unacked += size
        if self._stream_unacked >= RECEIVE_WINDOW // 2:
            self._write(frame(WINDOW_UPDATE, 0, STREAM_ID, U32.pack(self._stream_unacked)))
            self._stream_unacked = 0


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes:
    for key, value in headers:
        if key == name:
            return value
    return b""


def h2_error_name(code: int) -> str:
    return _H2_ERRORS[code] if code < len(_H2_ERRORS) else f"error 0x{code:x}"
