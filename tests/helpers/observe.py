"""Observing that nothing happens: the events a key range sees over a stated interval.

A test that must show something did *not* happen (a second start, a write by a stale
holder) watches the keys from a revision it has read, for an interval it states, and
asserts on the events it collected — never on a sleep followed by one read.
"""

from __future__ import annotations

import asyncio
import contextlib

from coord.client import Client, Event


async def events_during(client: Client, key: str, seconds: float, *, start_revision: int,
                        prefix: bool = False) -> list[Event]:
    """Every event on ``key`` (or under it, with ``prefix``) from ``start_revision`` on,
    as delivered within ``seconds`` of the call. Starting from a revision the caller read
    leaves no gap between that read and the observation."""
    seen: list[Event] = []

    async def collect() -> None:
        async for batch in client.watch(key, prefix=prefix, start_revision=start_revision):
            seen.extend(batch.events)

    task = asyncio.create_task(collect())
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if done:
        task.result()  # the watch ended early: raise its error
        raise AssertionError(f"the watch on {key!r} ended before {seconds}s")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return seen
