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

Scope — what etcd's clients use: prior-knowledge HTTP/2 without TLS (``h2c``) or over
TLS with ALPN ``h2`` (asyncio's TLS, :mod:`coord.rpc.h2.tls`), unary and
streaming calls in both directions, flow control on both sides, ``grpc-timeout``
deadlines, cancellation by ``RST_STREAM``, PING, GOAWAY on shutdown, status and message in
trailers (or a trailers-only response). Not supported, refused cleanly: compressed
messages (``grpc-encoding``), server push (never sent), priorities (ignored, as RFC 9113
allows). Handlers see a :class:`ServicerContext` that implements the part of
``grpc.aio.ServicerContext`` coord's services use (``abort``, metadata, peer, deadline;
:class:`coord.rpc.handlers.Context`), with coord's own :class:`StatusCode`.

The parts: ``frames`` (constants, codec, header blocks), ``protocol`` (what both ends do with
incoming frames), ``connection`` (a server connection's frames in, its limits),
``dispatch`` (running a call and sending its response under flow control), ``call`` (a
call's stream, context and request iterator), and this module, the listener.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from coord.netaddr import parse_hostport
from coord.rpc.h2.call import CallDetails, ServicerContext, Stream, metadata
from coord.rpc.h2.connection import Connection
from coord.rpc.h2.frames import (
    ACK,
    CANCEL,
    COMPRESSION_ERROR,
    CONNECTION_WINDOW,
    CONTINUATION,
    DATA,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FLUSH_AT,
    FRAME_HEADER,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    INTERNAL_ERROR,
    MAX_FRAME,
    MAX_HEADER_BLOCK,
    MAX_MESSAGE_DETAILS,
    MAX_WINDOW,
    NO_ERROR,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RESPONSE_HEADERS,
    RST_STREAM,
    SETTING,
    SETTINGS,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_HEADER_TABLE_SIZE,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_FRAME_SIZE,
    SETTINGS_MAX_HEADER_LIST_SIZE,
    STREAM_CLOSED,
    STREAM_WINDOW,
    TRAILERS_OK,
    U32,
    WINDOW_UPDATE,
    H2ProtocolError,
    HeaderBlocks,
    enable_keepalive,
    frame,
    grpc_message,
    read_frames,
    status_block,
)
from coord.rpc.h2.limits import PREFACE_TIMEOUT
from coord.rpc.h2.protocol import FrameHandler
from coord.rpc.h2.tls import ServerTLS, server_context
from coord.rpc.handlers import RpcAbort

__all__ = [
    "ACK",
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONNECTION_WINDOW",
    "CONTINUATION",
    "DATA",
    "DEFAULT_WINDOW",
    "END_HEADERS",
    "END_STREAM",
    "ENHANCE_YOUR_CALM",
    "FLOW_CONTROL_ERROR",
    "FLUSH_AT",
    "FRAME_HEADER",
    "FRAME_SIZE_ERROR",
    "GOAWAY",
    "HEADERS",
    "INTERNAL_ERROR",
    "MAX_FRAME",
    "MAX_HEADER_BLOCK",
    "MAX_MESSAGE_DETAILS",
    "MAX_WINDOW",
    "NO_ERROR",
    "PADDED",
    "PING",
    "PREFACE",
    "PRIORITY",
    "PRIORITY_FLAG",
    "PROTOCOL_ERROR",
    "PUSH_PROMISE",
    "REFUSED_STREAM",
    "RESPONSE_HEADERS",
    "RST_STREAM",
    "SETTING",
    "SETTINGS",
    "SETTINGS_ENABLE_PUSH",
    "SETTINGS_HEADER_TABLE_SIZE",
    "SETTINGS_INITIAL_WINDOW_SIZE",
    "SETTINGS_MAX_CONCURRENT_STREAMS",
    "SETTINGS_MAX_FRAME_SIZE",
    "SETTINGS_MAX_HEADER_LIST_SIZE",
    "STREAM_CLOSED",
    "STREAM_WINDOW",
    "TRAILERS_OK",
    "U32",
    "WINDOW_UPDATE",
    "CallDetails",
    "Connection",
    "FrameHandler",
    "H2ProtocolError",
    "H2Server",
    "HeaderBlocks",
    "Resolver",
    "RpcAbort",
    "ServicerContext",
    "Stream",
    "enable_keepalive",
    "frame",
    "grpc_message",
    "metadata",
    "read_frames",
    "split_address",
    "status_block",
]
"""The module is the package's front: these names are importable from here, wherever they
are defined (frames, call, connection, protocol)."""

Resolver = Callable[[CallDetails], Any]
"""Maps a call to its method handler (:class:`coord.rpc.handlers.MethodHandler`, or
anything with the same fields, such as grpcio's ``RpcMethodHandler``), or None."""


def split_address(address: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` → (host, port); no host: every interface."""
    try:
        host, port = parse_hostport(address)
    except ValueError:
        raise OSError(f"cannot listen on {address}: not host:port") from None
    return host or "0.0.0.0", port


class H2Server:
    """Serves gRPC calls on one listening address; ``resolve`` picks each call's handler."""

    def __init__(self, resolve: Resolver, max_receive: int,
                 tls: ServerTLS | None = None) -> None:
        self.resolve = resolve
        self.max_receive = max_receive
        self.tls = tls
        """None: plaintext (h2c); else TLS with ALPN h2 (:mod:`coord.rpc.h2.tls`)."""
        self.connections: set[Connection] = set()
        self.closing = False
        self.idle = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, address: str) -> int:
        """Listen on ``address``; returns the bound port. Raises OSError if it cannot
        (``ssl.SSLError``, an OSError, for a certificate or key it cannot load)."""
        host, port = split_address(address)
        loop = asyncio.get_running_loop()
        ssl = server_context(self.tls) if self.tls is not None else None
        # A TLS handshake gets the HTTP/2 preface's time too (asyncio's default is 60 s):
        # connections that never send a ClientHello must not be held longer than others.
        self._server = await loop.create_server(
            lambda: Connection(self), host, port, reuse_address=True, ssl=ssl,
            ssl_handshake_timeout=PREFACE_TIMEOUT if ssl is not None else None)
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
