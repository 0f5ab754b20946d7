"""The simulator's clock, event queue, seeded randomness and trace.

Everything in one simulation run happens inside :meth:`EventLoop.run_until`: events are
popped from a heap of ``(virtual_time, seq, callback, args)`` in time order; ``seq`` (a
global counter) breaks ties in scheduling order, so a run is a pure function of its seed.
Time is an ``int`` of virtual milliseconds and only moves when an event is popped.

Each component draws from its own ``random.Random`` derived from the run's seed and a label
(:func:`sub_rng`), so adding draws in one component never shifts another's stream.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any


def sub_rng(seed: int, label: str) -> random.Random:
    """A generator for one component: seeded from ``"<seed>:<label>"`` (string seeds are
    hashed with SHA-512 by ``random``, independent of ``PYTHONHASHSEED``)."""
    return random.Random(f"{seed}:{label}")


class Trace:
    """Per-run log of what happened, one line per transition (enabled on replay)."""

    def __init__(self, enabled: bool, clock: Callable[[], int]) -> None:
        self.on = enabled
        self.lines: list[str] = []
        self._clock = clock

    def log(self, what: str) -> None:
        if self.on:
            self.lines.append(f"{self._clock():>7} {what}")

    def tail(self, n: int) -> list[str]:
        return self.lines[-n:]


class EventLoop:
    """A virtual clock and a deterministic event heap."""

    def __init__(self, *, trace: bool = False) -> None:
        self.now = 0
        self._heap: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.events_run = 0
        self.trace = Trace(trace, lambda: self.now)

    def at(self, when: int, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` at virtual time ``when`` (not before now)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self.now), self._seq, fn, args))

    def after(self, delay: int, fn: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def pending(self) -> int:
        return len(self._heap)

    def run_until(
        self,
        end: int,
        after_event: Callable[[], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        """Pop and run events with time ≤ ``end``; then the clock reads ``end``.

        ``after_event`` runs after every event; ``stop`` is polled after every event and
        ends the run early (the clock then stays at that event's time).
        """
        heap = self._heap
        while heap and heap[0][0] <= end:
            when, _seq, fn, args = heapq.heappop(heap)
            self.now = when
            fn(*args)
            self.events_run += 1
            if after_event is not None:
                after_event()
            if stop is not None and stop():
                return
        self.now = max(self.now, end)
