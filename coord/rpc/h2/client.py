"""A gRPC client for one long-lived client-streaming call on its own HTTP/2 connection,
and for unary calls (:func:`unary_call`) the same way.

Why not ``grpc.aio``: the Raft peer transport writes a ``MessageBatch`` on one never-ending
``Peer/Send`` call per peer, and grpc.aio's ``_StreamRequestMixin._write`` (futures and a
hand-off to its poller thread per message) was the largest single CPU cost of a member.
This module is the sending half of :mod:`coord.rpc.h2.server`'s protocol: one
``asyncio.Protocol`` per call, a message becomes a DATA frame appended to an output list,
and everything written in one loop turn goes to the socket in one ``transport.write``.

Scope: prior-knowledge HTTP/2 without TLS (``h2c``), exactly one stream (id 1) per
connection, request messages not compressed, no metadata, no deadline. The server's
response (one message and its trailers) is read, and :meth:`StreamCall.finish` returns it;
the peer transport never finishes its ``Send`` call, it only writes until the call dies.
Its other calls (snapshots, lease forwarding, joining) are :func:`unary_call`: a call
written, finished and closed on a connection of its own, within a deadline kept here.

The call is *dead* — :meth:`StreamCall.write` and :meth:`StreamCall.drain` raise
:class:`StreamCallError` (a ``ConnectionError``) — once any of these happened: the
connection was lost, the server sent GOAWAY or RST_STREAM, the server ended the call with
trailers (any ``grpc-status``; an OK status before :meth:`StreamCall.finish` means the
handler returned early), a protocol error, or :meth:`StreamCall.close`. A dead call's
connection is closed at once; a new call needs a new :meth:`StreamCall.open`.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from ssl import SSLContext
from typing import cast

import structlog

from coord.netaddr import parse_hostport
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
    enable_keepalive,
    frame,
    read_frames,
)
from coord.rpc.h2.response import (
    MAX_RESPONSE,
    RECEIVE_WINDOW,
    STREAM_ID,
    ResponseReader,
    StreamCallError,
    h2_error_name,
)
from coord.rpc.status import StatusCode

log = structlog.get_logger("coord.rpc.h2.client")

USER_AGENT = b"coord-h2-client"

_DATA_HEAD = struct.Struct(">BHBBIBI")
"""A DATA frame's header and the gRPC message prefix of the message it carries whole."""
_MESSAGE_HEAD = struct.Struct(">BI")
"""gRPC's message prefix: compressed flag (always 0), length."""


class StreamCall(ResponseReader, asyncio.Protocol):
    """One client-streaming gRPC call on its own connection. Create with :meth:`open`.

    Invariants (all state is touched on the event loop only):

    * Bytes taken by :meth:`write` go out in order. A message is framed at once when the
      windows allow, else it waits in ``_pending`` (``buffered`` bytes, gRPC prefixes
      included) and is framed as WINDOW_UPDATE / SETTINGS frames give credit. Every DATA
      frame is at most the server's SETTINGS_MAX_FRAME_SIZE and never takes the stream or
      connection send window below zero (only a SETTINGS decrease can make it negative).
    * Frames go to ``_out``; the list is handed to the transport in one ``write`` at the
      end of the loop turn, or as soon as it holds :data:`FLUSH_AT` bytes.
    * Memory is bounded when the caller awaits :meth:`drain` after its writes: ``drain``
      returns only when nothing waits for flow control and the transport is not paused,
      so ``buffered`` is at most what was written since the last ``drain`` and ``_out``
      at most ``FLUSH_AT`` plus one frame.
    * ``_error`` is set exactly once, when the call dies; from then on nothing waits for
      credit, ``_pending`` is empty, the connection is closed or closing, every drain
      waiter is woken, and ``write``/``drain`` raise a fresh :class:`StreamCallError`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, address: str, method: str,
                 max_response: int = MAX_RESPONSE) -> None:
        self._loop = loop
        self._max_response = max_response
        self._address = address
        self._method = method
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._decoder = hpack.Decoder()
        self._out: list[bytes | memoryview] = []
        self._out_size = 0
        self._paused = False
        self._pending: deque[bytes | memoryview] = deque()
        self._pending_size = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._send_window = DEFAULT_WINDOW
        self._stream_window = DEFAULT_WINDOW
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = MAX_FRAME
        self._conn_unacked = 0
        self._stream_unacked = 0
        self._settings_seen = False
        self._settings: asyncio.Future[None] = loop.create_future()
        self._done: asyncio.Future[None] = loop.create_future()
        self._end_queued = False
        self._end_sent = False
        self._headers_seen = False
        self._response_buf = bytearray()
        self._response: bytes | None = None
        self._error: StreamCallError | None = None
        self._blocks = HeaderBlocks()

    # -- public API ----------------------------------------------------------------------

    @classmethod
    async def open(cls, address: str, method: str, *, connect_timeout: float,
                   max_response: int = MAX_RESPONSE,
                   ssl: SSLContext | None = None) -> StreamCall:
        """Connect to ``address`` (``host:port``, ``[v6]:port``) and start a call of
        ``method`` (``/package.Service/Method``).

        Returns once the server's SETTINGS arrived (so a non-HTTP/2 or silent peer fails
        here, not on a later write). Raises :class:`StreamCallError` if that does not
        happen within ``connect_timeout`` seconds or the connection fails (a TLS handshake
        too). A response of more than ``max_response`` bytes fails the call. With ``ssl``
        (:func:`coord.rpc.h2.tls.client_context`) the connection is TLS, the server's
        certificate checked against the address's host.
        """
        if not method.startswith("/"):
            raise ValueError(f"method must be /service/name, not {method!r}")
        host, port = _split_address(address)
        loop = asyncio.get_running_loop()
        call: StreamCall | None = None
        try:
            async with asyncio.timeout(connect_timeout):
                _, call = await loop.create_connection(
                    lambda: cls(loop, address, method, max_response), host, port, ssl=ssl,
                    server_hostname=host if ssl is not None else None)
                await call._settings
        except TimeoutError:
            if call is not None:
                call.close()
            raise StreamCallError(f"{address}: no HTTP/2 connection within "
                                  f"{connect_timeout:g} s") from None
        except OSError as err:
            if call is not None:
                call.close()
            raise StreamCallError(f"{address}: {err}") from err
        except BaseException:
            if call is not None:
                call.close()
            raise
        if call._error is not None:
            raise call._dead()
        return call

    def write(self, data: bytes) -> None:
        """Queue one serialized message (the gRPC prefix is added here). Never blocks; the
        caller bounds memory by awaiting :meth:`drain`. ``data`` must not be mutated
        afterwards (it is sent without a copy). Raises :class:`StreamCallError` if the
        call is dead or :meth:`finish` was called."""
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
                self._loop.call_soon(self._flush)
            out.append(_DATA_HEAD.pack(size >> 16, size & 0xFFFF, DATA, 0, STREAM_ID, 0, n))
            out.append(data)
            self._out_size += size + 9
            if self._out_size >= FLUSH_AT:
                self._flush()
            return
        self._pending.append(_MESSAGE_HEAD.pack(0, n))
        self._pending.append(data)
        self._pending_size += size
        self._send_pending()

    async def drain(self) -> None:
        """Wait until every written byte is framed within the flow-control windows and the
        transport is not paused (returns at once, without yielding, when that already
        holds). Raises :class:`StreamCallError` if the call is or becomes dead."""
        while True:
            if self._error is not None:
                raise self._dead()
            if not self._pending and not self._paused:
                return
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            await waiter

    async def finish(self) -> bytes:
        """End the request stream (after what was written) and wait for the response:
        its message on an OK status, else :class:`StreamCallError` with the status. Wrap
        it in a timeout; the server decides when to answer."""
        if self._error is None and not self._end_queued:
            self._end_queued = True
            self._send_pending()
        await asyncio.shield(self._done)
        error = self._error
        assert error is not None  # _done is resolved only by _fail
        if error.status is StatusCode.OK and self._response is not None:
            return self._response
        raise self._dead()

    @property
    def closed(self) -> bool:
        """True once the call is dead (see the module docstring) or finished."""
        return self._error is not None

    @property
    def blocked(self) -> bool:
        """Whether ``drain`` would wait: data waiting for credit, or the transport paused."""
        return bool(self._pending) or self._paused

    @property
    def buffered(self) -> int:
        """Bytes written but not yet framed for want of flow-control credit."""
        return self._pending_size

    def close(self) -> None:
        """Cancel the call (RST_STREAM CANCEL while the stream is open) and close the
        connection. Idempotent; does nothing to a call that is already dead."""
        if self._error is None:
            self._fail("call closed by the client", quiet=True)

    # -- transport callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        enable_keepalive(transport)
        settings = (SETTING.pack(SETTINGS_ENABLE_PUSH, 0)
                    + SETTING.pack(SETTINGS_INITIAL_WINDOW_SIZE, RECEIVE_WINDOW))
        authority = self._address.encode()
        block = (hpack.encode_indexed(3)  # :method POST
                 + hpack.encode_indexed(6)  # :scheme http
                 + hpack.encode_literal_indexed_name(4, self._method.encode())  # :path
                 + hpack.encode_literal_indexed_name(1, authority)  # :authority
                 + hpack.encode_literal_indexed_name(31, b"application/grpc")
                 + hpack.encode_literal(b"te", b"trailers")
                 + hpack.encode_literal_indexed_name(58, USER_AGENT))
        self._write(PREFACE + frame(SETTINGS, 0, 0, settings)
                    + frame(WINDOW_UPDATE, 0, 0, U32.pack(RECEIVE_WINDOW - DEFAULT_WINDOW))
                    + frame(HEADERS, END_HEADERS, STREAM_ID, block))
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._out.clear()
        self._fail(f"connection lost{f': {exc}' if exc else ''}", reset=None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        try:
            if not self._settings_seen and len(buf) >= 4 and buf[3] != SETTINGS:
                raise H2ProtocolError(PROTOCOL_ERROR, "the peer did not start with HTTP/2 "
                                      "SETTINGS: not an h2c gRPC server")
            read_frames(buf, self._on_frame, lambda: self._transport is not None)
        except (H2ProtocolError, hpack.HpackError) as err:
            code = err.code if isinstance(err, H2ProtocolError) else COMPRESSION_ERROR
            self._write(frame(GOAWAY, 0, 0, U32.pack(0) + U32.pack(code)
                              + str(err).encode()[:200]))
            self._fail(f"HTTP/2 error from the server ({h2_error_name(code)}): {err}",
                       reset=None)

    # -- frames in (credit; the response: ResponseReader) -------------------------------

    def _on_initial_window(self, delta: int) -> None:
        self._stream_window += delta
        if self._stream_window > MAX_WINDOW:
            raise H2ProtocolError(FLOW_CONTROL_ERROR, "stream window overflow")

    def _on_peer_settings(self) -> None:
        if not self._settings_seen:
            self._settings_seen = True
            if not self._settings.done():
                self._settings.set_result(None)
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

    # -- frames out ----------------------------------------------------------------------

    def _write(self, data: bytes | memoryview) -> None:
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= FLUSH_AT:
            self._flush()  # the transport sees the volume now (pause_writing)

    def _flush(self) -> None:
        if self._out and self._transport is not None:
            self._transport.write(b"".join(self._out))
        self._out.clear()
        self._out_size = 0

    def _send_pending(self) -> None:
        """Frame what the windows allow of ``_pending`` (several messages may share a
        frame), then END_STREAM if :meth:`finish` asked for it and nothing is left."""
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
        if self._end_queued and not self._end_sent and self._error is None:
            self._end_sent = True
            self._write(frame(DATA, END_STREAM, STREAM_ID))
        self._wake()

    def _wake(self) -> None:
        if self._waiters:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiters.clear()

    # -- the end -------------------------------------------------------------------------

    def _fail(self, reason: str, status: StatusCode | None = None, *,
              reset: int | None = CANCEL, quiet: bool = False) -> None:
        """The call dies: remember why, send RST_STREAM(``reset``) unless None or the
        stream is already closed on both sides, close the connection, wake every waiter."""
        if self._error is not None:
            return
        self._error = StreamCallError(f"{self._method} to {self._address}: {reason}", status)
        if not quiet:
            log.debug("h2_client.call_ended", address=self._address, method=self._method,
                      reason=reason, status=status.name if status else None)
        self._pending.clear()
        self._pending_size = 0
        transport = self._transport
        if transport is not None:
            if reset is not None:
                self._write(frame(RST_STREAM, 0, STREAM_ID, U32.pack(reset)))
            self._flush()
            self._transport = None
            if transport.get_write_buffer_size():
                transport.abort()  # a peer not reading must not keep the socket open
            else:
                transport.close()
        if not self._settings.done():
            self._settings.set_result(None)
        if not self._done.done():
            self._done.set_result(None)
        self._wake()

    def _dead(self) -> StreamCallError:
        """A fresh exception for the dead call (re-raising one instance would grow its
        traceback with every raise)."""
        error = self._error
        if error is None:
            return StreamCallError(f"{self._method} to {self._address}: finish() was called")
        return StreamCallError(str(error), error.status)


async def unary_call(address: str, method: str, request: bytes, *, timeout: float,
                     max_response: int = MAX_RESPONSE, ssl: SSLContext | None = None) -> bytes:
    """One unary call of ``method`` at ``address``: the serialized response on an OK
    status. Raises :class:`StreamCallError` for any failure, the server's status
    (``status``) or no answer within ``timeout`` seconds (``DEADLINE_EXCEEDED``); the
    server's handler is cancelled then (RST_STREAM)."""
    call: StreamCall | None = None
    try:
        async with asyncio.timeout(timeout):
            call = await StreamCall.open(address, method, connect_timeout=timeout,
                                         max_response=max_response, ssl=ssl)
            call.write(request)
            return await call.finish()
    except TimeoutError:
        raise StreamCallError(f"{method} to {address}: no answer within {timeout:g} s",
                              StatusCode.DEADLINE_EXCEEDED) from None
    finally:
        if call is not None:
            call.close()


def _split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); ValueError if it is neither."""
    host, port = parse_hostport(address)
    if not host:
        raise ValueError(f"not host:port: {address!r}")
    return host, port
