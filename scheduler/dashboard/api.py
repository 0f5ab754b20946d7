"""The read side of the JSON API under ``/api/v1/`` (docs/api.md)."""

from __future__ import annotations

from aiohttp import web

from scheduler.clusterview import cluster_members, cluster_status
from scheduler.dashboard.context import CLIENT

PREFIX = "/api/v1"


async def get_cluster(request: web.Request) -> web.Response:
    """Members and each member's status (leader, term, indexes)."""
    client = request.app[CLIENT]
    members = await cluster_members(client)
    status = await cluster_status(client)
    leaders = {row["leader_id"] for row in status if not row.get("error")}
    terms = [row["raft_term"] for row in status if not row.get("error")]
    return web.json_response({
        "members": members, "status": status,
        "leader": next(iter(leaders)) if len(leaders) == 1 else None,
        "raft_term": max(terms) if terms else None,
        "healthy": bool(status) and all(not row.get("error") for row in status),
    })


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/cluster", get_cluster)
