"""`raftcron dashboard`: the web dashboard and JSON API on a store (coord or real etcd),
and the ``--listen-http`` flag ``agent`` shares with it (docs/api.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import typer

from coord.netaddr import is_loopback, parse_hostport
from scheduler.cli_app import fail
from scheduler.cli_tls import client_auth, client_tls

DEFAULT_LISTEN = "127.0.0.1:8080"

ListenOpt = Annotated[str, typer.Option(
    "--listen", help="HOST:PORT the dashboard serves on (plain HTTP; loopback unless "
    "--insecure-listen).")]
ListenHttpOpt = Annotated[str, typer.Option(
    "--listen-http", help="HOST:PORT to serve the web dashboard and its JSON API on "
    "(as `raftcron dashboard`; off when not given).")]


def check_listen(flag: str, address: str, insecure_listen: bool) -> None:
    """Exit 2 on a bad address, or one other hosts can reach without --insecure-listen
    (the dashboard has no TLS of its own: the rule of every other listener)."""
    try:
        host, _ = parse_hostport(address)
    except ValueError as err:
        fail(f"{flag}: {err}", 2)
        return
    if not is_loopback(host) and not insecure_listen:
        fail(f"refusing to serve the dashboard in plaintext on {flag} {address}, reachable "
             "from other hosts: listen on 127.0.0.1 (behind a TLS proxy), or pass "
             "--insecure-listen", 2)


def settings_for(listen: str, endpoints: str) -> Any:
    from scheduler.dashboard.context import Settings

    host, _ = parse_hostport(listen)
    return Settings(listen=listen, loopback_only=is_loopback(host),
                    endpoints=tuple(e for e in endpoints.split(",") if e))


@contextlib.asynccontextmanager
async def http_listener(listen: str, client: Any, endpoints: str) -> AsyncIterator[None]:
    """``agent --listen-http``: the dashboard on the agent's own client for the duration
    (nothing when ``listen`` is empty). A port in use stops the agent with one line."""
    if not listen:
        yield
        return
    from scheduler.dashboard.serve import serving

    async with serving(client, settings_for(listen, endpoints)):
        yield


Runner = Callable[[Callable[[asyncio.Event], Awaitable[None]]], None]
"""``scheduler.cli.run_until_signal``: runs ``main(stop)`` until SIGINT/SIGTERM."""


def dashboard(endpoints: str, listen: str, insecure_listen: bool, run: Runner) -> None:
    """`raftcron dashboard` (registered in :mod:`scheduler.cli`, beside the other commands
    that run a process)."""
    from coord.client import Client
    from coord.logsetup import configure as configure_logging
    from scheduler.dashboard.serve import serve_until

    configure_logging()
    check_listen("--listen", listen, insecure_listen)
    tls, auth = client_tls(), client_auth()
    settings = settings_for(listen, endpoints)

    async def main(stop: asyncio.Event) -> None:
        async with Client(endpoints, timeout=5, tls=tls, auth=auth) as client:
            await serve_until(client, settings, stop)

    try:
        run(main)
    except OSError as err:
        fail(str(err), 1)
