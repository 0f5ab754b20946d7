"""Pure scheduling: fire instants, DST rules, misfire/catch-up, worker ranking.

Nothing here reads a clock, sleeps or does I/O: every function takes the instants it needs.
Instants are whole milliseconds (finer fractions are floored) and are returned as aware UTC
``datetime`` objects. Cron schedules fire on whole seconds; only a job's ``@every`` phase
(below) puts its instants at a fraction of a second.

Schedule expressions are parsed in :mod:`scheduler.cron` and occurrence ids live in
:mod:`scheduler.occurrence`; both are re-exported here.

Time zones and DST (the rules, tested in ``tests/scheduler/test_plan_dst.py``)
-----------------------------------------------------------------------------
A cron schedule is matched against wall-clock time in the job's IANA zone. Each cron
schedule is one of two kinds, decided from its text the way Vixie cron does:

* **interval-style**: the second (6-field form), minute or hour field starts with ``*``
  (``*/15 * * * *``, ``0 * * * *``, ``@hourly``, ``*/10 * * * * *``). It follows real time: a
  wall time that does not exist (spring-forward gap) is simply not there, and a wall time
  that occurs twice (fall-back fold) fires at both real instants. ``@every`` behaves the same
  (it is defined in real time anyway). So ``*/15 * * * *`` fires every 15 real minutes
  across both transitions: no duplicates, no hole.
* **fixed-time**: everything else (``30 2 * * *``, ``0 9 * * mon-fri``, ``@daily``). A wall
  time in a **gap** fires once, at the first instant after the gap (the transition instant,
  e.g. 03:00 local in New York on 2026-03-08); several gap times, and a matching time right at
  the end of the gap, all collapse into that one run. A wall time in a **fold** fires
  **once**, at its first occurrence (the earlier, pre-transition offset).

Occurrences are identified by their instant in UTC (:mod:`scheduler.occurrence`).

Misfires
--------
:func:`catch_up` decides what to do with occurrences that should have fired while nobody
ran them: every occurrence in ``(since, now]`` is missed except the latest one, which runs once
if it is at most ``starting_deadline`` old. ``since`` is the later of the last occurrence
handled and the time the schedule was last edited, so an edited schedule never fires
retroactively.

Workers
-------
:func:`rank_workers` orders live workers for one (job, occurrence) by rendezvous (highest
random weight) hashing with BLAKE2b, so every worker computes the same order and removing a
worker only moves the occurrences it ranked first. :func:`tags_match` says whether a worker's
tags satisfy a job's.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from scheduler.cron import (
    DURATION_HELP,
    CronSchedule,
    EverySchedule,
    Schedule,
    format_duration,
    load_zone,
    parse_duration,
    parse_schedule,
    spread,
)
from scheduler.occurrence import (
    EPOCH,
    MANUAL_SUFFIX,
    from_ms,
    from_ts,
    normalize_occurrence,
    occurrence_id,
    occurrence_instant,
    occurrence_sort_key,
    parse_occurrence_id,
    to_ms,
    to_ts,
)

__all__ = [
    "DURATION_HELP",
    "EPOCH",
    "MANUAL_SUFFIX",
    "CatchUp",
    "CronSchedule",
    "EverySchedule",
    "Schedule",
    "Timetable",
    "catch_up",
    "eligible_workers",
    "format_duration",
    "load_zone",
    "normalize_occurrence",
    "occurrence_id",
    "occurrence_instant",
    "occurrence_sort_key",
    "parse_duration",
    "parse_occurrence_id",
    "parse_schedule",
    "rank_workers",
    "rendezvous_score",
    "spread",
    "tags_match",
]

# --------------------------------------------------------------------------- time zones


def _offset(zone: ZoneInfo, ts: int) -> int:
    off = datetime.fromtimestamp(ts, tz=zone).utcoffset()
    assert off is not None
    return int(off.total_seconds())


_SAMPLE = 3 * 3600  # offsets are sampled this often to find transitions (none are closer)


@lru_cache(maxsize=1024)
def _transitions(zone: ZoneInfo, year: int) -> tuple[int, ...]:
    """Instants in ``[Jan 1 year, Jan 1 year+1)`` UTC at which ``zone``'s offset changes."""
    start = to_ts(datetime(year, 1, 1, tzinfo=UTC))
    end = to_ts(datetime(year + 1, 1, 1, tzinfo=UTC))
    out = []
    prev_t, prev_off = start - 1, _offset(zone, start - 1)
    t = start
    while t < end + _SAMPLE:
        off = _offset(zone, t)
        if off != prev_off:
            lo, hi = prev_t, t  # offset(lo) == prev_off != offset(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset(zone, mid) == prev_off:
                    lo = mid
                else:
                    hi = mid
            if start <= hi < end:
                out.append(hi)
            prev_off = off
        prev_t = t
        t += _SAMPLE
    return tuple(out)


def _first_transition(zone: ZoneInfo, after: int, upto: int) -> int | None:
    """The first instant ``x`` with ``after < x <= upto`` at which the offset changes."""
    year = from_ts(after).year
    last = from_ts(upto).year
    while year <= last:
        for x in _transitions(zone, year):
            if after < x <= upto:
                return x
            if x > upto:
                return None
        year += 1
    return None


def _naive_wall(ts: int, off: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(seconds=ts + off)


def _wall_ts(w: datetime, off: int) -> int:
    return int((w - datetime(1970, 1, 1)) // timedelta(seconds=1)) - off


# --------------------------------------------------------------------------- timetable


@dataclass(frozen=True)
class Timetable:
    """A schedule in a zone: the source of a job's fire instants."""

    schedule: Schedule
    zone: ZoneInfo

    @classmethod
    def parse(cls, expr: str, timezone: str = "UTC") -> Timetable:
        """Parse both; raises :class:`ScheduleError` / ``ValueError`` (bad zone)."""
        return cls(parse_schedule(expr), load_zone(timezone))

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire instant strictly after ``after`` (None only if it never fires)."""
        ms = self._next_ms(to_ms(after) + 1)
        return None if ms is None else from_ms(ms)

    def iter_after(self, after: datetime) -> Iterator[datetime]:
        """Fire instants strictly after ``after``, ascending, forever."""
        t = to_ms(after) + 1
        while (ms := self._next_ms(t)) is not None:
            yield from_ms(ms)
            t = ms + 1

    def between(self, start: datetime, end: datetime) -> list[datetime]:
        """Fire instants ``x`` with ``start < x <= end``."""
        out = []
        for x in self.iter_after(start):
            if x > end:
                break
            out.append(x)
        return out

    def _next_ms(self, t: int) -> int | None:
        """The first fire instant ``>= t`` (milliseconds since the epoch)."""
        sched = self.schedule
        if isinstance(sched, EverySchedule):
            step = sched.interval * 1000
            return -(-(t - sched.phase_ms) // step) * step + sched.phase_ms
        ts = self._next_ts(-(-t // 1000))
        return None if ts is None else ts * 1000

    def _next_ts(self, t: int) -> int | None:
        """The first cron fire instant ``>= t`` (whole seconds since the epoch)."""
        sched = self.schedule
        assert isinstance(sched, CronSchedule)
        zone = self.zone
        while True:
            off = _offset(zone, t)
            prev_off = _offset(zone, t - 1)
            if sched.fixed_time and prev_off < off:
                # t is the end of a gap: fixed-time walls inside the gap fire now.
                m = sched.next_wall(_naive_wall(t, prev_off))
                if m is not None and m < _naive_wall(t, off):
                    return t
            w = sched.next_wall(_naive_wall(t, off))
            if w is None:
                return None
            inst = _wall_ts(w, off)
            x = _first_transition(zone, t, inst)
            if x is not None:
                t = x  # the offset changes before that wall time: re-plan from there
                continue
            if sched.fixed_time and self._is_repeat(w, inst):
                t = inst + 1  # second pass of a fold: it already fired at the first
                continue
            return inst

    def _is_repeat(self, w: datetime, inst: int) -> bool:
        first = to_ts(w.replace(tzinfo=self.zone, fold=0))
        return first < inst and _naive_wall(first, _offset(self.zone, first)) == w


# --------------------------------------------------------------------------- misfires


@dataclass(frozen=True)
class CatchUp:
    """What to do about occurrences that fell due while no worker ran them.

    ``run`` is the one occurrence to start now (the latest due one, if within the starting
    deadline). ``missed`` are the occurrences to record as missed, oldest first: at most
    ``max_missed``, the latest ones; ``more_missed`` says older ones were left out.
    ``next_fire`` is the first occurrence after ``now``.
    """

    run: datetime | None
    missed: tuple[datetime, ...]
    more_missed: bool
    next_fire: datetime | None


def catch_up(timetable: Timetable, *, since: datetime, now: datetime,
             starting_deadline: float, edited_at: datetime | None = None,
             max_missed: int = 100) -> CatchUp:
    """Decide about the occurrences in ``(since, now]``.

    ``since`` is the last occurrence already handled (run, missed or claimed by anyone) or,
    for a job never run, when it was created. ``edited_at`` is when its schedule last
    changed: occurrences at or before it are never considered, so an edit never fires
    retroactively. The latest due occurrence runs if ``now - it <= starting_deadline``; every
    other due occurrence is missed.
    """
    lower = since if edited_at is None else max(since, edited_at)
    lower_ms, now_ms = to_ms(lower), to_ms(now)
    nxt = timetable.next_after(now)
    if lower_ms >= now_ms:
        return CatchUp(None, (), False, nxt)
    # Find the latest max_missed + 1 occurrences in (lower, now] without walking all of them:
    # look back through a window that grows until it holds enough or reaches ``lower``.
    window = 60_000
    while True:
        start_ms = max(lower_ms, now_ms - window)
        latest: deque[datetime] = deque(maxlen=max_missed + 1)
        count = 0
        for x in timetable.iter_after(from_ms(start_ms)):
            if x > now:
                break
            latest.append(x)
            count += 1
        if count > max_missed or start_ms == lower_ms:
            break
        window *= 4
    items = list(latest)
    run: datetime | None = None
    if items and (now_ms - to_ms(items[-1])) <= starting_deadline * 1000:
        run = items.pop()
    elif len(items) > max_missed:
        items.pop(0)
    more = count > len(items) + (run is not None)
    if not more and start_ms > lower_ms:
        first = timetable.next_after(from_ms(lower_ms))
        more = first is not None and to_ms(first) <= start_ms
    return CatchUp(run, tuple(items), more, nxt)


# --------------------------------------------------------------------------- workers


def rendezvous_score(job: str, occurrence: str, worker: str) -> int:
    """A stable 64-bit weight of ``worker`` for one occurrence (BLAKE2b, not ``hash()``)."""
    data = "\x1f".join((job, occurrence, worker)).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def rank_workers(job: str, occurrence: str, workers: Iterable[str]) -> list[str]:
    """The distinct ``workers`` ordered best-first for (job, occurrence).

    Deterministic (same inputs → same order on every machine), a permutation of the distinct
    inputs, and removing a worker leaves the relative order of the others unchanged, so only
    the occurrences it ranked first move.
    """
    return sorted(set(workers), key=lambda w: (-rendezvous_score(job, occurrence, w), w))


def tags_match(job_tags: Mapping[str, str], worker_tags: Mapping[str, str]) -> bool:
    """A worker may run a job iff it has every tag of the job with the same value.

    A job without tags runs on any worker; extra worker tags don't matter.
    """
    return all(worker_tags.get(k) == v for k, v in job_tags.items())


def eligible_workers(job_tags: Mapping[str, str],
                     workers: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Names of the workers (name → tags) whose tags satisfy ``job_tags``, sorted."""
    return sorted(name for name, tags in workers.items() if tags_match(job_tags, tags))
