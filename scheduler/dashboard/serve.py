"""Serving the dashboard on a listener until a stop event (``raftcron dashboard`` and
``agent --listen-http``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from coord.client import Client
from coord.netaddr import parse_hostport
from scheduler.dashboard.app import make_app
from scheduler.dashboard.context import Settings

log = structlog.get_logger("raftcron.dashboard")


class ListenError(OSError):
    """The dashboard's address cannot be served (in use, not local...): one line."""


@contextlib.asynccontextmanager
async def serving(client: Client, settings: Settings) -> AsyncIterator[web.AppRunner]:
    """Serve the dashboard on ``settings.listen`` for the duration. A port already in use
    raises OSError before anything is served."""
    host, port = parse_hostport(settings.listen)
    runner = web.AppRunner(make_app(client, settings), access_log=None,
                           handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as err:
            raise ListenError(f"cannot serve the dashboard on {settings.listen}: "
                              f"{err.strerror or err}") from None
        log.info("dashboard.listening", url=f"http://{settings.listen}/")
        yield runner
    finally:
        await runner.cleanup()


async def serve_until(client: Client, settings: Settings, stop: asyncio.Event) -> None:
    async with serving(client, settings):
        await stop.wait()
