"""Fan-out of the read model's changes to the SSE subscribers (:mod:`.live`).

The model publishes each change once; every subscriber whose topics (and job, if it asked
for one) match gets it in its own bounded queue. A subscriber that falls that far behind is
dropped — its stream ends and the browser's EventSource reconnects and re-reads — so one
slow client never holds memory or slows the others down.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Final

TOPICS: Final = {"locks": "lock", "runs": "run", "jobs": "job", "output": "output",
                 "workers": "worker"}
"""Topic a subscriber asks for → the SSE event name of its changes."""

QUEUE_MAX: Final = 1000
"""Changes a subscriber may have pending before it is dropped."""


@dataclass(eq=False)
class Subscription:
    events: frozenset[str]
    """Event names it wants (``lock``, ``run``...)."""
    job: str | None
    """Only this job's changes (None: all)."""
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    overflowed: bool = False

    def wants(self, event: str, job: str | None) -> bool:
        return event in self.events and (self.job is None or job == self.job)


class Hub:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()

    def __len__(self) -> int:
        return len(self._subs)

    def subscribe(self, topics: frozenset[str], job: str | None = None) -> Subscription:
        """``topics`` are keys of :data:`TOPICS` (checked by the caller)."""
        sub = Subscription(frozenset(TOPICS[t] for t in topics), job)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def publish(self, event: str, job: str | None, data: dict[str, Any]) -> None:
        for sub in list(self._subs):
            if not sub.wants(event, job):
                continue
            try:
                sub.queue.put_nowait((event, data))
            except asyncio.QueueFull:
                sub.overflowed = True
                self._subs.discard(sub)
                # Wake its reader so it sees the overflow and ends the stream.
                sub.queue.get_nowait()
                sub.queue.put_nowait(("overflow", {}))

    def close(self) -> None:
        """End every subscriber's stream (the dashboard is stopping)."""
        for sub in list(self._subs):
            self._subs.discard(sub)
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(("closed", {}))

    def wants_any(self, event: str) -> bool:
        """Whether anyone listens for ``event`` (the model skips work nobody reads)."""
        return any(event in s.events for s in self._subs)
