"""Clocks, injectable so tests can skew or drive time.

The scheduler never calls ``datetime.now()`` or ``time.monotonic()`` directly: it asks a
:class:`Clock`. :class:`SystemClock` takes an ``offset`` (seconds added to the wall clock) to
simulate a worker whose clock is wrong; :class:`ManualClock` only moves when told to.
Wall time (``now``) decides *which* occurrence is due; monotonic time measures *durations*
(timeouts, grace periods) and is never skewed.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """A source of wall time (aware, UTC) and monotonic seconds."""

    def now(self) -> datetime:
        """The current wall-clock instant, timezone-aware in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...


class SystemClock:
    """The machine's clock, optionally skewed by ``offset`` seconds (may be negative)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only through :meth:`advance` and :meth:`set` (tests)."""

    def __init__(self, start: datetime, offset: float = 0.0) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)
        self._mono = 0.0
        self.offset = offset

    def now(self) -> datetime:
        return self._now + timedelta(seconds=self.offset)

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward; use offset for skew")
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    def set(self, instant: datetime) -> None:
        """Jump wall time to ``instant`` (monotonic time advances by the same amount)."""
        target = instant.astimezone(UTC)
        delta = (target - self._now).total_seconds()
        self.advance(delta)
