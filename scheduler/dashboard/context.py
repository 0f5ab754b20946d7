"""What the dashboard's handlers find on the application (typed aiohttp app keys).

A handler reads ``request.app[CLIENT]`` (the store client, for one-off reads and actions),
``request.app[MODEL]`` (the live read model: jobs, locks, workers, recent runs) and
``request.app[SETTINGS]``; ``request[USER]`` and ``request[CSRF_TOKEN]`` per request.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from coord.client import Client
from scheduler.dashboard.model import ReadModel


@dataclass(frozen=True)
class Settings:
    """How the dashboard was started (flags of ``raftcron dashboard``)."""

    listen: str = "127.0.0.1:8080"
    """The HOST:PORT it serves on."""
    loopback_only: bool = True
    """True when it listens on a loopback address only (no auth/TLS in front of it)."""
    endpoints: tuple[str, ...] = ()
    """The store endpoints it reads (shown on the cluster page)."""


CLIENT = web.AppKey("client", Client)
MODEL = web.AppKey("model", ReadModel)
SETTINGS = web.AppKey("settings", Settings)

# Set on each request by the guard (scheduler.dashboard.guard), read by pages and actions.
USER = web.RequestKey[str | None]("user")
"""The logged-in user (None without store auth)."""
CSRF_TOKEN = web.RequestKey("csrf_token", str)
"""This browser's CSRF token, for forms and the pages' ``<meta name="csrf-token">``."""
