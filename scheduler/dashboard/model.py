"""The dashboard's live read model (filled in next commits)."""

from __future__ import annotations

from coord.client import Client


class ReadModel:
    """What the pages and the API read, kept in memory from store watches."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def start(self) -> None:
        """Read the state once and start following it."""

    async def stop(self) -> None:
        """Stop following (the client stays open: it is the caller's)."""
