"""The listener's routes: ``/metrics`` (the registry, Prometheus text format), ``/health``
as etcd answers it, ``/livez`` and ``/readyz``.

A check is an async callable returning None when all is well, else the reason. etcd's
``/health`` answers 200 ``{"health":"true","reason":""}``, or 503 with ``"false"`` and the
first failing check's reason: ``RAFT NO LEADER`` when the member knows no leader, ``QGET
ERROR:...`` when a linearizable read does not complete in time (the member cannot reach
a quorum). ``/livez`` answers 200 ``ok`` as long as the process serves at all; ``/readyz``
200 ``ok`` when every readiness check passes (a member: the same as ``/health``; a
worker: its session is open and its views synced), 503 and the reasons otherwise."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from coord.ops.http import Reply, Route

Check = Callable[[], Awaitable[str | None]]

HEALTH_TIMEOUT = 2.0
"""Seconds the linearizable read of ``/health`` may take before the member is reported
unable to commit."""


class Readable(Protocol):
    @property
    def leader_id(self) -> int: ...
    async def read_barrier(self, serializable: bool) -> None: ...


def member_check(core: Readable, timeout: float = HEALTH_TIMEOUT) -> Check:
    """etcd's member health: a leader, and a linearizable read that completes."""

    async def check() -> str | None:
        if not core.leader_id:
            return "RAFT NO LEADER"
        try:
            async with asyncio.timeout(timeout):
                await core.read_barrier(False)
        except TimeoutError:
            return "QGET ERROR:context deadline exceeded"
        except Exception as err:  # noqa: BLE001 - any failure of the read is the reason
            return f"QGET ERROR:{err}"
        return None

    return check


async def first_failure(checks: Sequence[Check]) -> str | None:
    for check in checks:
        reason = await check()
        if reason is not None:
            return reason
    return None


def routes(registry: CollectorRegistry, health: Sequence[Check],
           ready: Sequence[Check]) -> dict[str, Route]:
    """The listener's routes over ``registry`` and the checks (``health`` for ``/health``,
    ``health`` then ``ready`` for ``/readyz``)."""

    async def metrics() -> Reply:
        return Reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)

    async def health_route() -> Reply:
        reason = await first_failure(health)
        body = {"health": "true" if reason is None else "false", "reason": reason or ""}
        return Reply(200 if reason is None else 503,
                     json.dumps(body, separators=(",", ":")).encode(), "application/json")

    async def livez() -> Reply:
        return Reply(200, b"ok\n")

    async def readyz() -> Reply:
        reasons = [r for c in (*health, *ready) if (r := await c()) is not None]
        if not reasons:
            return Reply(200, b"ok\n")
        return Reply(503, "".join(f"[-] {r}\n" for r in reasons).encode()
                     + b"readyz check failed\n")

    return {"/metrics": metrics, "/health": health_route, "/livez": livez,
            "/readyz": readyz}
