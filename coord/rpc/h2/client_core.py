"""A client call's sans-I/O core (RFC 9113): one gRPC call on stream 1 of its own
connection. Bytes in (:meth:`ClientCore.receive`), bytes out (:meth:`ClientCore.data_to_send`),
and what happened to the call as hooks (the server's SETTINGS arrived, credit came, the call
ended); no transport, no event loop, no clock.

It shares with the server's core (:class:`coord.rpc.h2.core.ServerCore`) the frame codec
(:mod:`coord.rpc.h2.frames`), the frame checks, SETTINGS, PING and connection credit
(:class:`coord.rpc.h2.protocol.FrameHandler`), HPACK, the stream states of RFC 9113 5.1
(:mod:`coord.rpc.h2.streams`) and the output list (:class:`coord.rpc.h2.output.FrameOutput`);
the response is read by :class:`coord.rpc.h2.response.ResponseReader`.

The asyncio side is :class:`coord.rpc.h2.client.StreamCall`; the fuzz test
(tests/api/test_h2_client_fuzz.py) drives the core alone.

The call is *dead* once :attr:`ClientCore.error` is set — exactly once, by :meth:`_fail`:
the connection was lost, the server sent GOAWAY or RST_STREAM, the server ended the call
with trailers (any ``grpc-status``), a protocol error, or :meth:`cancel`. From then on no
frame is read, nothing waits for credit and :meth:`send_message` raises.
"""

from __future__ import annotations

import struct
from collections import deque

import structlog

from coord.rpc.h2 import hpack
from coord.rpc.h2.frames import (
    CANCEL,
    COMPRESSION_ERROR,
    DATA,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    FLOW_CONTROL_ERROR,
    FLUSH_AT,
    FRAME_HEADER,
    GOAWAY,
    HEADERS,
    MAX_FRAME,
    MAX_WINDOW,
    PREFACE,
    PROTOCOL_ERROR,
    RST_STREAM,
    SETTING,
    SETTINGS,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_INITIAL_WINDOW_SIZE,
    U32,
    WINDOW_UPDATE,
    H2ProtocolError,
    HeaderBlocks,
    frame,
    read_frames,
)
from coord.rpc.h2.output import FrameOutput
from coord.rpc.h2.response import (
    MAX_RESPONSE,
    RECEIVE_WINDOW,
    STREAM_ID,
    ResponseReader,
    StreamCallError,
    h2_error_name,
)
from coord.rpc.h2.streams import CLOSED, LOCAL_CLOSED, OPEN, SENT_END, State
from coord.rpc.status import StatusCode

log = structlog.get_logger("coord.rpc.h2.client")

USER_AGENT = b"coord-h2-client"

_DATA_HEAD = struct.Struct(">BHBBIBI")
"""A DATA frame's header and the gRPC message prefix of the message it carries whole."""
_MESSAGE_HEAD = struct.Struct(">BI")
"""gRPC's message prefix: compressed flag (always 0), length."""

PROTOCOL_ERRORS = (H2ProtocolError, hpack.HpackError)
"""What :meth:`ClientCore.receive` may raise: the server broke HTTP/2 (the caller then
ends the connection with :meth:`ClientCore.connection_error`)."""


class ClientCore(FrameOutput, ResponseReader):
    """One client call's HTTP/2 connection state, without I/O.

    Invariants:

    * Bytes taken by :meth:`send_message` go out in order. A message is framed at once when
      the windows allow, else it waits in ``_pending`` (:attr:`buffered` bytes, gRPC
      prefixes included) and is framed as WINDOW_UPDATE / SETTINGS frames give credit.
      Every DATA frame is at most the server's SETTINGS_MAX_FRAME_SIZE and never takes the
      stream or connection send window below zero (only a SETTINGS decrease can make it
      negative).
    * ``state`` is the stream's RFC 9113 5.1 state: idle until :meth:`start`, open, half
      closed (local) once END_STREAM is written, closed once the call is dead.
    * ``error`` is set exactly once, when the call dies; from then on ``_pending`` is empty
      and no frame is read or written but what :meth:`_fail` and
      :meth:`connection_error` write on the way out.
    """

    def __init__(self, address: str, method: str, max_response: int = MAX_RESPONSE) -> None:
        self._address = address
        self._method = method
        self._max_response = max_response
        self._buf = bytearray()
        self._decoder = hpack.Decoder()
        self._out = []
        self._out_size = 0
        self._paused = False
        """The transport asked this side to stop writing (set by the I/O side)."""
        self._gone = False
        """The connection is closed or closing: nothing more is written to it."""
        self._pending: deque[bytes | memoryview] = deque()
        self._pending_size = 0
        self._send_window = DEFAULT_WINDOW
        self._stream_window = DEFAULT_WINDOW
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = MAX_FRAME
        self._conn_unacked = 0
        self._stream_unacked = 0
        self._settings_seen = False
        self._end_queued = False
        self.state: int = State.IDLE
        self._headers_seen = False
        self._response_buf = bytearray()
        self._response: bytes | None = None
        self._error: StreamCallError | None = None
        self._blocks = HeaderBlocks()

    # -- what the I/O side provides (no-ops for a bare core) -------------------------------

    def _on_ready(self) -> None:
        """The server's first SETTINGS arrived (or the call died before): the call is up."""

    def _on_writable(self) -> None:
        """Data waiting for credit was framed, or the call died: wake whoever waits."""

    def _on_ended(self) -> None:
        """The call just died (``error`` is set): hand over what is in the output list,
        close the connection, wake every waiter."""

    # -- the call ----------------------------------------------------------------------------

    def start(self) -> None:
        """The connection preface, SETTINGS, the connection window raised, and the request
        headers: the stream is open."""
        settings = (SETTING.pack(SETTINGS_ENABLE_PUSH, 0)
                    + SETTING.pack(SETTINGS_INITIAL_WINDOW_SIZE, RECEIVE_WINDOW))
        block = (hpack.encode_indexed(3)  # :method POST
                 + hpack.encode_indexed(6)  # :scheme http
                 + hpack.encode_literal_indexed_name(4, self._method.encode())  # :path
                 + hpack.encode_literal_indexed_name(1, self._address.encode())  # :authority
                 + hpack.encode_literal_indexed_name(31, b"application/grpc")
                 + hpack.encode_literal(b"te", b"trailers")
                 + hpack.encode_literal_indexed_name(58, USER_AGENT))
        self.state = OPEN
        self._write(PREFACE + frame(SETTINGS, 0, 0, settings)
                    + frame(WINDOW_UPDATE, 0, 0, U32.pack(RECEIVE_WINDOW - DEFAULT_WINDOW))
                    + frame(HEADERS, END_HEADERS, STREAM_ID, block))

    def send_message(self, data: bytes) -> None:
        """Queue one serialized message (the gRPC prefix is added here). Never blocks; the
        caller bounds memory by waiting while :attr:`blocked`. ``data`` must not be mutated
        afterwards (it is sent without a copy). Raises :class:`StreamCallError` if the call
        is dead or :meth:`end_request` was called."""
        if self._error is not None or self._end_queued:
            raise self._dead()
        n = len(data)
        size = n + 5
        if (not self._pending and size <= self._peer_max_frame and size <= self._stream_window
                and size <= self._send_window):
            # The common case: the whole message in one DATA frame, no copy of ``data``.
            self._stream_window -= size
            self._send_window -= size
            out = self._out
            if not out:
                self._output_pending()
            out.append(_DATA_HEAD.pack(size >> 16, size & 0xFFFF, DATA, 0, STREAM_ID, 0, n))
            out.append(data)
            self._out_size += size + 9
            if self._out_size >= FLUSH_AT:
                self._output_full()
            return
        self._pending.append(_MESSAGE_HEAD.pack(0, n))
        self._pending.append(data)
        self._pending_size += size
        self._send_pending()

    def end_request(self) -> None:
        """End the request stream after what was sent (END_STREAM as soon as the windows
        let the rest out). The response ends the call."""
        if self._error is None and not self._end_queued:
            self._end_queued = True
            self._send_pending()

    def cancel(self) -> None:
        """Cancel the call (RST_STREAM CANCEL while the stream is open). Idempotent; does
        nothing to a call that is already dead."""
        if self._error is None:
            self._fail("call closed by the client", quiet=True)

    def result(self) -> bytes:
        """The response of a call that ended with an OK status; else raises
        :class:`StreamCallError` (why the call died, or that it has not ended)."""
        error = self._error
        if error is not None and error.status is StatusCode.OK and self._response is not None:
            return self._response
        raise self._dead()

    @property
    def error(self) -> StreamCallError | None:
        """Why the call died; None while it lives."""
        return self._error

    @property
    def closed(self) -> bool:
        """True once the call is dead or finished."""
        return self._error is not None

    @property
    def blocked(self) -> bool:
        """Whether a writer should wait: data waiting for credit, or the transport paused."""
        return bool(self._pending) or self._paused

    @property
    def buffered(self) -> int:
        """Bytes written but not yet framed for want of flow-control credit."""
        return self._pending_size

    # -- bytes in --------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Bytes from the server, each frame acted on at once; nothing is read once the call
        is dead. Raises one of :data:`PROTOCOL_ERRORS` when the server breaks HTTP/2; the
        caller then ends the connection (:meth:`connection_error`)."""
        if self._error is not None:
            return
        buf = self._buf
        buf += data
        if not self._settings_seen and len(buf) >= 4 and buf[3] != SETTINGS:
            raise H2ProtocolError(PROTOCOL_ERROR, "the peer did not start with HTTP/2 "
                                  "SETTINGS: not an h2c gRPC server")
        read_frames(buf, self._on_frame, self._alive)

    def _alive(self) -> bool:
        return self._error is None

    def connection_error(self, err: H2ProtocolError | hpack.HpackError) -> None:
        """The server broke HTTP/2: GOAWAY with the code for ``err``, and the call dies."""
        code = err.code if isinstance(err, H2ProtocolError) else COMPRESSION_ERROR
        if not self._gone:
            self._write(frame(GOAWAY, 0, 0, U32.pack(0) + U32.pack(code)
                              + str(err).encode()[:200]))
        self._fail(f"HTTP/2 error from the server ({h2_error_name(code)}): {err}", reset=None)

    def connection_closed(self, reason: str) -> None:
        """The connection is gone (``reason``: why, for the error): the call dies."""
        self._gone = True
        self._out.clear()
        self._out_size = 0
        self._fail(f"connection lost{f': {reason}' if reason else ''}", reset=None)

    # -- frames in (credit; the response: ResponseReader) ---------------------------------

    def _on_initial_window(self, delta: int) -> None:
        self._stream_window += delta
        if self._stream_window > MAX_WINDOW:
            raise H2ProtocolError(FLOW_CONTROL_ERROR, "stream window overflow")

    def _on_peer_settings(self) -> None:
        if not self._settings_seen:
            self._settings_seen = True
            self._on_ready()
        self._send_pending()

    def _on_connection_credit(self) -> None:
        self._send_pending()

    def _on_stream_credit(self, stream_id: int, increment: int) -> None:
        if stream_id != STREAM_ID:
            self._other_stream(WINDOW_UPDATE, stream_id)
            return
        if not increment:
            self._fail("zero stream window increment", reset=PROTOCOL_ERROR)
            return
        self._stream_window += increment
        if self._stream_window > MAX_WINDOW:
            self._fail("stream window overflow", reset=FLOW_CONTROL_ERROR)
            return
        self._send_pending()

    # -- frames out ------------------------------------------------------------------------

    def _send_pending(self) -> None:
        """Frame what the windows allow of ``_pending`` (several messages may share a
        frame), then END_STREAM if :meth:`end_request` asked for it and nothing is left."""
        pending = self._pending
        while pending:
            budget = min(self._stream_window, self._send_window, self._peer_max_frame)
            if budget <= 0:
                return
            parts: list[bytes | memoryview] = []
            size = 0
            while pending and size < budget:
                chunk = pending[0]
                room = budget - size
                if len(chunk) <= room:
                    pending.popleft()
                else:
                    view = memoryview(chunk)
                    pending[0] = view[room:]
                    chunk = view[:room]
                parts.append(chunk)
                size += len(chunk)
            self._stream_window -= size
            self._send_window -= size
            self._pending_size -= size
            self._write(FRAME_HEADER.pack(size >> 16, size & 0xFFFF, DATA, 0, STREAM_ID))
            for part in parts:
                self._write(part)
        if self._end_queued and self.state not in LOCAL_CLOSED and self._error is None:
            self.state = SENT_END[self.state]
            self._write(frame(DATA, END_STREAM, STREAM_ID))
        self._on_writable()

    # -- the end ---------------------------------------------------------------------------

    def _fail(self, reason: str, status: StatusCode | None = None, *,
              reset: int | None = CANCEL, quiet: bool = False) -> None:
        """The call dies: remember why, send RST_STREAM(``reset``) unless None or the
        connection is gone, and tell the I/O side (:meth:`_on_ended`)."""
        if self._error is not None:
            return
        self._error = StreamCallError(f"{self._method} to {self._address}: {reason}", status)
        if not quiet:
            log.debug("h2_client.call_ended", address=self._address, method=self._method,
                      reason=reason, status=status.name if status else None)
        self._pending.clear()
        self._pending_size = 0
        self.state = CLOSED
        if not self._gone:
            if reset is not None:
                self._write(frame(RST_STREAM, 0, STREAM_ID, U32.pack(reset)))
            self._gone = True
        self._on_ended()
        self._on_writable()

    def _dead(self) -> StreamCallError:
        """A fresh exception for the dead call (re-raising one instance would grow its
        traceback with every raise)."""
        error = self._error
        if error is None:
            return StreamCallError(f"{self._method} to {self._address}: "
                                   + ("finish() was called" if self._end_queued
                                      else "the call has not ended"))
        return StreamCallError(str(error), error.status)
