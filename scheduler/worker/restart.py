"""Where a restarted worker picks a job's timeline up, as a pure function of the job's run
records (read once at start): no store, no asyncio, no clock.

Besides the last occurrence handled (the catch-up runs from there), it finds the *holes*:
occurrences before that one, still inside their starting deadline, with no record. A worker
that restarted while every worker was down left such an occurrence to live workers and
deferred its ``missed`` record (``decide.missed_settle``); if it died before writing it,
nobody else would, since every later catch-up starts after the newest record.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from scheduler.claim import RunRecord
from scheduler.plan import MANUAL_SUFFIX, Timetable, occurrence_id, parse_occurrence_id

HOLES_MAX = 100
"""At most this many holes (the newest) are recorded per job and restart."""
SCAN_MAX = 100_000
"""Fire instants looked at per job and restart, at most (a long deadline, a short period)."""


@dataclass(frozen=True)
class Restart:
    since: datetime | None
    """The last occurrence handled, if its record carries the current spec revision
    (None: the job starts afresh from when the worker saw it)."""
    holes: tuple[datetime, ...] = ()
    """Unrecorded occurrences before ``since``, younger than the starting deadline, after
    the first record of the current spec revision; ascending."""


def restart_point(records: Iterable[RunRecord], revision: int, timetable: Timetable,
                  now: datetime, starting_deadline: float) -> Restart:
    """Decide from a job's run records (in key order) where its restarted timer starts.

    Records without a spec revision (missed records of older workers) and manual runs say
    nothing about the schedule; any record, though, accounts for its occurrence."""
    recorded: set[str] = set()
    first: RunRecord | None = None
    last: RunRecord | None = None
    for rec in records:
        recorded.add(rec.occurrence)
        if MANUAL_SUFFIX in rec.occurrence or not rec.spec_revision:
            continue
        last = rec
        if rec.spec_revision == revision and first is None:
            first = rec
    if last is None or first is None or last.spec_revision != revision:
        return Restart(None)
    since = parse_occurrence_id(last.occurrence)
    lower = max(parse_occurrence_id(first.occurrence),
                now - timedelta(seconds=starting_deadline))
    holes: deque[datetime] = deque(maxlen=HOLES_MAX)
    for n, instant in enumerate(timetable.iter_after(lower)):
        if instant >= since or n >= SCAN_MAX:
            break
        if occurrence_id(instant) not in recorded:
            holes.append(instant)
    return Restart(since, tuple(holes))


def started_from(restart: Restart, seen_at: datetime) -> Restart:
    """Where a job's timer starts when this worker starts (``seen_at``: its clock's now):
    from the last record (:func:`restart_point`), but never after ``seen_at``. A record
    of an occurrence after it was claimed ahead — by a worker whose clock runs ahead, or
    whose claim is sent ``claim_ahead`` early; starting after it would leave the
    occurrences due between ``seen_at`` and it unfired by this worker, and by the worker
    ahead too if its timer started past them: never run and never recorded (a whole
    fleet started at once, one clock 2 s ahead). From ``seen_at``, those are fired as
    usual: claimed, or skipped once a later one was claimed; a recorded one is refused
    by the create-only claim."""
    if restart.since is None or restart.since <= seen_at:
        return restart
    return Restart(seen_at, tuple(h for h in restart.holes if h < seen_at))


def resumed_from(restart: Restart, seen_at: datetime,
                 suspended_at: datetime | None) -> Restart:
    """Where a job's timer starts when this worker sees its suspension (set at
    ``suspended_at``) end, at ``seen_at``: like a restart's, from the last record, if that
    is not older than the suspension. A worker cut off when ``jobs resume`` landed sees it
    late; from ``seen_at`` it would skip what fell due in between, unfired if the other
    workers were down then. The resume recorded the last occurrence due while suspended
    (``suspension.resume``), so nothing of the suspension is replayed. A last record older
    than the suspension means none fell due during it, or the key was deleted by hand
    (nothing recorded): then the timer starts from ``seen_at``, as it always did."""
    since = restart.since
    if since is None or (suspended_at is not None and since < suspended_at):
        return Restart(seen_at, restart.holes)
    return restart
