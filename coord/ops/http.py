"""A small HTTP/1.1 listener for ``/metrics``, ``/health``, ``/livez`` and ``/readyz``.

One GET per connection (``Connection: close``), as Prometheus and probes use it. Bounded:
the request head may hold ``MAX_HEAD`` bytes and must arrive within ``HEAD_TIMEOUT``
seconds, at most ``MAX_CONNECTIONS`` are served at once (more are closed at once), so a
slow or flooding client costs a few sockets, never memory or the event loop. It imports
nothing of coord (a worker without a member uses it too)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog

from coord.aiotools import within
from coord.netaddr import join_hostport, parse_hostport

log = structlog.get_logger("coord.ops")

MAX_HEAD = 8192
"""Bytes of request line + headers a request may have."""
HEAD_TIMEOUT = 5.0
"""Seconds a client has to send its request head."""
MAX_CONNECTIONS = 64
"""Connections served at once; more are closed without an answer."""

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           431: "Request Header Fields Too Large", 500: "Internal Server Error",
           503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Route = Callable[[], Awaitable[Reply]]


class OpsServer:
    """Serves ``routes`` (path → handler) on ``address`` (``host:port``; port 0 picks one:
    :attr:`address` says which after :meth:`start`)."""

    def __init__(self, address: str, routes: Mapping[str, Route]) -> None:
        self._host, self._port = parse_hostport(address)
        self.routes = dict(routes)
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.address = address

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host or None, self._port,
                                                  limit=MAX_HEAD)
        port = self._server.sockets[0].getsockname()[1]
        self.address = join_hostport(self._host, port)
        log.info("ops.listening", address=self.address, paths=sorted(self.routes))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._conns) >= MAX_CONNECTIONS or task is None:
            writer.close()
            return
        self._conns.add(task)
        try:
            reply, head_only = await self._answer(reader)
            head = (f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, '')}\r\n"
                    f"Content-Type: {reply.content_type}\r\n"
                    f"Content-Length: {len(reply.body)}\r\n"
                    "X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n")
            writer.write(head.encode("latin-1") + (b"" if head_only else reply.body))
            await within(writer.drain(), HEAD_TIMEOUT)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[Reply, bool]:
        try:
            raw = await within(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            return Reply(431, b"request head too large\n"), False
        parts = raw.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return Reply(400, b"bad request\n"), False
        method, target = parts[0], parts[1].decode("latin-1").split("?", 1)[0]
        route = self.routes.get(target)
        if route is None:
            return Reply(404, b"404 page not found\n"), False
        if method not in (b"GET", b"HEAD"):
            return Reply(405, b"method not allowed\n"), False
        try:
            return await route(), method == b"HEAD"
        except Exception as err:  # noqa: BLE001 - a failing page fails its request only
            log.error("ops.page_failed", path=target, error=repr(err))
            return Reply(500, b"internal error\n"), False

