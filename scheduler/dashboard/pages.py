"""The dashboard's HTML pages (h20 fills this module)."""

from __future__ import annotations

from aiohttp import web


def add_routes(app: web.Application) -> None:
    """Register the page routes on ``app``."""
