"""One server connection as an asyncio protocol: the transport's callbacks feed the
sans-I/O core (:class:`coord.rpc.h2.core.ServerCore`) and write what it produced once per
loop turn; the handshake timer, the peer certificate check and closing the connection are
here. The calls run in :class:`coord.rpc.h2.dispatch.CallDispatch`."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from coord.rpc.h2 import hpack
from coord.rpc.h2.dispatch import CallDispatch, ServerState
from coord.rpc.h2.frames import (
    INTERNAL_ERROR,
    PROTOCOL_ERROR,
    H2ProtocolError,
    enable_keepalive,
)
from coord.rpc.h2.limits import PREFACE_TIMEOUT
from coord.rpc.h2.tls import AuthContext, auth_context, common_name

log = structlog.get_logger("coord.rpc.h2")


class Connection(CallDispatch, asyncio.Protocol):
    """One client connection. All state is touched on the event loop only."""

    def __init__(self, server: ServerState) -> None:
        super().__init__(server)
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        """Cuts off a peer that does not take its GOAWAY (see :meth:`_abort_connection`)."""
        self.auth: AuthContext = {}
        """The client's verified certificate, for the calls' ``auth_context()``."""

    # -- transport callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            host = peer[0]
            self.peer = (f"ipv6:[{host}]:{peer[1]}" if ":" in host
                         else f"ipv4:{host}:{peer[1]}")
        allowed_cn = self.server.tls.allowed_cn if self.server.tls is not None else ""
        peercert = transport.get_extra_info("peercert") if self.server.tls is not None else None
        self.auth = auth_context(peercert)
        if allowed_cn and common_name(peercert) != allowed_cn:
            log.warning("h2.peer_cn_refused", peer=self.peer, allowed_cn=allowed_cn)
            transport.abort()  # type: ignore[attr-defined]
            return
        self.server.connections.add(self)
        enable_keepalive(transport)  # dead clients are found by the kernel
        self.start()
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
        if self._abort_timer is not None:
            # The timer holds the transport: over TLS its buffers and OpenSSL state, about
            # half a MB, which a client reconnecting hundreds of times a second would make
            # the member hold for every connection of the last second (#16).
            self._abort_timer.cancel()
            self._abort_timer = None
        self.transport = None
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
        try:
            self.receive(data)
        except (H2ProtocolError, hpack.HpackError) as err:
            self.connection_error(err)
            self._flush()
            self._abort_connection()
        except Exception:  # a bug here fails this connection, not the server
            log.exception("h2.connection_failed", peer=self.peer)
            self._goaway(INTERNAL_ERROR)
            self._flush()
            self._abort_connection()

    # -- the core's I/O hooks -------------------------------------------------------------

    def _output_pending(self) -> None:
        self.loop.call_soon(self._flush)

    def _output_full(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if self._out and not self._closed and self.transport is not None:
            self.transport.write(b"".join(self._out))
        self._out.clear()
        self._out_size = 0

    def _handshake_done(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    def _streams_gone(self) -> None:
        self.server.idle.set()

    def _abort_connection(self) -> None:
        transport = self.transport
        if transport is not None and not self._closed and self._abort_timer is None:
            transport.close()  # flushes the GOAWAY; a peer that does not read is cut off
            self._abort_timer = self.loop.call_later(1.0, transport.abort)

    def close(self) -> None:
        self._flush()
        if self.transport is not None and not self._closed:
            self.transport.close()
