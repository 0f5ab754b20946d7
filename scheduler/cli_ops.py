"""``--listen-metrics`` for ``coord serve``, ``agent`` and ``worker``: the flag, its check
and the listener around a command's main coroutine (docs/operations.md)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from coord.netaddr import is_loopback, parse_hostport
from scheduler.cli_app import fail

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from coord.ops.health import Check

MetricsOpt = Annotated[str, typer.Option(
    "--listen-metrics", help="HOST:PORT to serve /metrics, /health, /livez and /readyz on "
    "(plain HTTP; off when not given).")]


def check_listen_metrics(address: str, insecure_listen: bool) -> None:
    """Exit 2 on a bad ``--listen-metrics``, or one reachable from other hosts without
    ``--insecure-listen`` (the listener has no TLS: the same rule as the other ports)."""
    if not address:
        return
    try:
        host, _ = parse_hostport(address)
    except ValueError as err:
        fail(f"--listen-metrics: {err}", 2)
    if not is_loopback(host) and not insecure_listen:
        fail(f"refusing to serve plaintext on --listen-metrics {address}, reachable from "
             "other hosts: listen on 127.0.0.1 (a local Prometheus agent or a proxy), or "
             "pass --insecure-listen", 2)


def new_registry(address: str) -> CollectorRegistry | None:
    """A fresh registry when ``--listen-metrics`` is given (the process's own, never
    prometheus_client's global one), else None: no metrics at all."""
    if not address:
        return None
    from prometheus_client import (
        CollectorRegistry,
        PlatformCollector,
        ProcessCollector,
        disable_created_metrics,
    )

    # No ``*_created`` series: etcd has none, and they double every counter's lines.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=True)
    # process_* (CPU, resident memory, open fds), as etcd exports Go's process collector.
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


@contextlib.asynccontextmanager
async def ops_listener(address: str, registry: CollectorRegistry | None,
                       health: Sequence[Check], ready: Sequence[Check]) -> AsyncIterator[None]:
    """Serve the ops routes on ``address`` for the duration (nothing when it is empty)."""
    if not address or registry is None:
        yield
        return
    from coord.ops.health import routes
    from coord.ops.http import OpsServer

    server = OpsServer(address, routes(registry, health, ready))
    await server.start()
    try:
        yield
    finally:
        await server.stop()
