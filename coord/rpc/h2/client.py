"""A gRPC client for one long-lived client-streaming call on its own HTTP/2 connection,
and for unary calls (:func:`unary_call`) the same way.

Why not ``grpc.aio``: the Raft peer transport writes a ``MessageBatch`` on one never-ending
``Peer/Send`` call per peer, and grpc.aio's ``_StreamRequestMixin._write`` (futures and a
hand-off to its poller thread per message) was the largest single CPU cost of a member.

The HTTP/2 of a call is the sans-I/O :class:`coord.rpc.h2.client_core.ClientCore` (frames,
stream state, flow control, the response); :class:`StreamCall` is the thin asyncio protocol
that drives it: the transport's bytes go to the core, what the core writes goes to the
socket in one ``transport.write`` per loop turn, and its hooks resolve the futures that
:meth:`StreamCall.open`, :meth:`StreamCall.drain` and :meth:`StreamCall.finish` wait on.

Scope: HTTP/2 over TLS or prior-knowledge without (``h2c``), exactly one stream (id 1) per
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
from ssl import SSLContext, SSLError
from typing import cast

from coord.netaddr import parse_hostport
from coord.rpc.h2.client_core import PROTOCOL_ERRORS, USER_AGENT, ClientCore
from coord.rpc.h2.frames import enable_keepalive
from coord.rpc.h2.response import MAX_RESPONSE, StreamCallError
from coord.rpc.status import StatusCode

__all__ = ["USER_AGENT", "StreamCall", "StreamCallError", "unary_call"]


class StreamCall(ClientCore, asyncio.Protocol):
    """One client-streaming gRPC call on its own connection. Create with :meth:`open`.

    Invariants (all state is touched on the event loop only), beyond the core's:

    * What the core writes is handed to the transport in one ``write`` at the end of the
      loop turn, or as soon as it holds :data:`~coord.rpc.h2.frames.FLUSH_AT` bytes.
    * Memory is bounded when the caller awaits :meth:`drain` after its writes: ``drain``
      returns only when nothing waits for flow control and the transport is not paused,
      so ``buffered`` is at most what was written since the last ``drain`` and the output
      list at most ``FLUSH_AT`` plus one frame.
    * Once the call is dead the connection is closed or closing, every drain waiter is
      woken, and ``write``/``drain`` raise a fresh :class:`StreamCallError`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, address: str, method: str,
                 max_response: int = MAX_RESPONSE) -> None:
        super().__init__(address, method, max_response)
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._settings: asyncio.Future[None] = loop.create_future()
        self._done: asyncio.Future[None] = loop.create_future()
        self._lost: Exception | None = None
        """Why the transport closed (a TLS alert after the handshake, a reset), if it said."""

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
        too: then its ``tls`` is true, and its ``__cause__`` the ``ssl.SSLError`` if there
        was one — a server that refuses this side's certificate after a TLS 1.3 handshake
        just closes). A response of more
        than ``max_response`` bytes fails the call. With ``ssl``
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
            raise StreamCallError(f"{address}: {err}",
                                  tls=isinstance(err, SSLError)) from err
        except BaseException:
            if call is not None:
                call.close()
            raise
        if call.closed:
            if ssl is not None and not call._settings_seen and call._lost is None:
                # TLS 1.3: a server that refuses this side's certificate does so after the
                # client's handshake is done, and asyncio closes without the alert.
                raise StreamCallError(
                    f"{address}: the server closed the TLS connection before HTTP/2 began "
                    "(did it refuse this side's certificate?)", tls=True)
            raise call._dead() from call._lost
        return call

    write = ClientCore.send_message
    """Queue one serialized message (:meth:`ClientCore.send_message`); await
    :meth:`drain` to bound memory."""

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
        self.end_request()
        await asyncio.shield(self._done)
        return self.result()

    def close(self) -> None:
        """Cancel the call (RST_STREAM CANCEL while the stream is open) and close the
        connection. Idempotent; does nothing to a call that is already dead."""
        self.cancel()

    # -- transport callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        enable_keepalive(transport)
        self.start()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._lost = exc
        self.connection_closed(str(exc) if exc else "")

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._on_writable()

    def data_received(self, data: bytes) -> None:
        try:
            self.receive(data)
        except PROTOCOL_ERRORS as err:
            self.connection_error(err)

    # -- the core's hooks ----------------------------------------------------------------

    def _output_pending(self) -> None:
        self._loop.call_soon(self._flush)

    def _output_full(self) -> None:
        self._flush()  # the transport sees the volume now (pause_writing)

    def _flush(self) -> None:
        if self._out and self._transport is not None:
            self._transport.write(b"".join(self._out))
        self._out.clear()
        self._out_size = 0

    def _on_ready(self) -> None:
        if not self._settings.done():
            self._settings.set_result(None)

    def _on_writable(self) -> None:
        if self._waiters:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiters.clear()

    def _on_ended(self) -> None:
        transport = self._transport
        if transport is not None:
            self._flush()
            self._transport = None
            if transport.get_write_buffer_size():
                transport.abort()  # a peer not reading must not keep the socket open
            else:
                transport.close()
        self._on_ready()
        if not self._done.done():
            self._done.set_result(None)


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
