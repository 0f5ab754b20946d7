"""`raftcron dashboard`: the web dashboard and JSON API on a store (coord or real etcd),
and the ``--listen-http`` flag ``agent`` shares with it (docs/api.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated

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


Runner = Callable[[Callable[[asyncio.Event], Awaitable[None]]], None]
"""``scheduler.cli.run_until_signal``: runs ``main(stop)`` until SIGINT/SIGTERM."""


def dashboard(endpoints: str, listen: str, insecure_listen: bool, run: Runner) -> None:
    """`raftcron dashboard` (registered in :mod:`scheduler.cli`, beside the other commands
    that run a process)."""
    from coord.client import Client
    from coord.logsetup import configure as configure_logging
    from scheduler.dashboard.context import Settings
    from scheduler.dashboard.serve import serve_until

    configure_logging()
    check_listen("--listen", listen, insecure_listen)
    tls, auth = client_tls(), client_auth()
    host, _ = parse_hostport(listen)
    settings = Settings(listen=listen, loopback_only=is_loopback(host),
                        endpoints=tuple(e for e in endpoints.split(",") if e))

    async def main(stop: asyncio.Event) -> None:
        async with Client(endpoints, timeout=5, tls=tls, auth=auth) as client:
            await serve_until(client, settings, stop)

    try:
        run(main)
    except OSError as err:
        fail(str(err), 1)
