"""The dashboard's actions: trigger, kill, suspend, resume (h21 fills this module)."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    """Register the action routes on ``app``."""
