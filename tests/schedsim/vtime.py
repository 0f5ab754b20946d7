"""Simulated time for asyncio: a loop that never blocks and a patched ``time`` module.

The production worker reads ``time.monotonic()`` and ``time.time()`` directly (durations,
retry budgets, record stamps) and waits with ``asyncio.sleep`` and timeouts, all of which
go through the loop's clock (``time.monotonic``). While :func:`virtual_time` is active both
functions read one :class:`VirtualClock`, and the loop's selector, instead of blocking
until the next timer, moves that clock to it: a simulated minute costs only the CPU of
what happens in it, and the order of events depends only on the code and the seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import time
from collections.abc import Iterator
from typing import Any

EPOCH = 1_800_000_000.0
"""Wall-clock seconds at simulated time 0 (an arbitrary fixed instant, a whole minute)."""


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is pending: the simulation cannot go on."""


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return EPOCH + self.now


class _VirtualSelector(selectors.SelectSelector):
    """Real descriptors (only the loop's self-pipe) are polled without waiting; a wait
    for a timer advances the virtual clock instead."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready:
            return ready
        if timeout is None:
            raise Deadlock("no timer pending and nothing ready")
        if timeout > 0:
            self.clock.now += timeout
        return []


def new_loop(clock: VirtualClock) -> asyncio.AbstractEventLoop:
    return asyncio.SelectorEventLoop(_VirtualSelector(clock))


@contextlib.contextmanager
def virtual_time(clock: VirtualClock) -> Iterator[None]:
    """``time.monotonic`` and ``time.time`` read ``clock`` inside the block."""
    saved: dict[str, Any] = {"monotonic": time.monotonic, "time": time.time}
    time.monotonic = clock.monotonic
    time.time = clock.wall
    try:
        yield
    finally:
        time.monotonic = saved["monotonic"]
        time.time = saved["time"]
