"""The worker's decisions, as pure functions: no store, no asyncio, no clock.

Each takes what the worker knows (its views, the time, the record it read) and says what
to do; the parts of :mod:`scheduler.worker` do the I/O around them. Kept apart so they are
tested directly, table by table (``tests/scheduler/test_worker_decide.py``), and so a
simulator can drive them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from scheduler.claim import ACTIVE, LockHolder, RunRecord
from scheduler.executor import RunResult
from scheduler.keys import valid_occurrence
from scheduler.plan import (
    MANUAL_SUFFIX,
    Timetable,
    occurrence_id,
    occurrence_instant,
    rank_workers,
)
from scheduler.suspension import last_due_while_suspended

ACTIVE_STATUS = re.compile(rb'"status"\s*:\s*"(?:claimed|running|retrying)"')
"""Matches the bytes of a run record whose status is active (decoded only then)."""


# ------------------------------------------------------------------ firing
def claim_position(job: str, occ: str, eligible: Sequence[str], me: str) -> int | None:
    """This worker's rank for (job, occ) among the live eligible workers: 0 claims at
    once, k claims ``k * grace`` after the instant if nobody has; None if not eligible."""
    if me not in eligible:
        return None
    return rank_workers(job, occ, eligible).index(me)


def held_occurrence(raw_holder: bytes | None) -> str | None:
    """The occurrence of a lock holder value seen on the locks watch, None if unreadable."""
    if raw_holder is None:
        return None
    try:
        return LockHolder.decode(raw_holder).occurrence
    except (ValueError, TypeError):
        return None


def taken(raw_holder: bytes | None, occ: str) -> bool:
    """True if the last lock PUT seen for the job claims ``occ``: a backup need not read
    the store to know it is too late (the claim txn would refuse it anyway)."""
    return held_occurrence(raw_holder) == occ


def later_claimed(concurrency: str, raw_holder: bytes | None, occ: str) -> str | None:
    """The occurrence last seen claimed on the locks watch, if ``occ`` must not start
    after it (:func:`later_occurrence`; best effort: the watch may lag, the claim txn
    decides)."""
    return later_occurrence(concurrency, held_occurrence(raw_holder), occ)


def later_occurrence(concurrency: str, held: str | None, occ: str) -> str | None:
    """``held`` if it is a later occurrence than ``occ`` of a ``forbid`` or ``replace``
    job: their occurrences start in order, so ``occ`` is skipped rather than started
    after it (for ``replace``: rather than killing the newer run). A manual ``replace``
    run is exempt: it replaces whatever runs, as requested."""
    if held is None or concurrency not in ("forbid", "replace"):
        return None
    if concurrency == "replace" and MANUAL_SUFFIX in occ:
        return None
    mine, theirs = occurrence_instant(occ), occurrence_instant(held)
    return held if mine is not None and theirs is not None and theirs > mine else None


def busy_note(occ: str, held: str) -> str:
    """Why a ``forbid`` occurrence is skipped when the job's lock is held by run ``held``:
    an earlier run still running, or (after a store outage, when the claims of two
    occurrences race) a later occurrence that won its claim first."""
    mine, theirs = occurrence_instant(occ), occurrence_instant(held)
    if mine is not None and theirs is not None and theirs > mine:
        return overtaken_note(held)
    return f"previous run {held} still running"


@dataclass(frozen=True)
class Neighbours:
    """The occurrences scheduled just before and just after one (ids; None: unknown, or
    none), for the claim's order compares."""

    prev: str | None = None
    next: str | None = None


ALONE = Neighbours()
"""No order compares (a manual run, a trigger)."""


def claim_order(concurrency: str, occ: str, around: Neighbours
                ) -> tuple[str | None, str | None]:
    """The order compares of a claim of ``occ``: (the occurrence that must be recorded,
    the one that must not be). Only scheduled ``forbid``/``replace`` occurrences are
    ordered. A claim requires the next occurrence unrecorded, so an occurrence never
    starts after a later one was claimed or settled (the store decides, whatever the
    claimant's views show), and the previous one recorded (when this worker's timer fired
    it too), so it cannot overtake the older occurrence's pending claim when both wait
    out a store outage: the older one is claimed, started or recorded first. Every live
    worker that fired the previous occurrence claims it or records it by its starting
    deadline, so the wait is bounded; the first occurrence a timer fires (after a start,
    a resume or an edit) has no previous one to wait for."""
    if concurrency not in ("forbid", "replace") or MANUAL_SUFFIX in occ:
        return None, None
    return around.prev, around.next


def next_in_order(concurrency: str, occ: str, timetable: Timetable) -> str | None:
    """The occurrence after ``occ`` that a claim or re-run of it requires unrecorded
    (:func:`claim_order`), None if ``occ`` is not ordered (``allow``, a manual run)."""
    if concurrency not in ("forbid", "replace") or MANUAL_SUFFIX in occ:
        return None
    instant = occurrence_instant(occ)
    after = None if instant is None else timetable.next_after(instant)
    return None if after is None else occurrence_id(after)


def overtaken_note(later: str) -> str:
    """The note of an occurrence skipped because a later one was claimed or settled."""
    return f"a later occurrence {later} was claimed first"


def superseded(concurrency: str, occ: str, nxt: str | None, now: datetime) -> str | None:
    """``nxt`` if a scheduled ``replace`` occurrence ``occ`` has been overtaken by time
    while it waited for the lock: its next occurrence ``nxt`` is due too, and the newest
    due occurrence is the one that replaces the run. ``occ`` is recorded skipped rather
    than started only to be killed at once by ``nxt`` (a backlog of waiters after slow
    calls drained oldest first that way, one kill per step: seed 414817)."""
    if concurrency != "replace" or nxt is None or MANUAL_SUFFIX in occ:
        return None
    due = occurrence_instant(nxt)
    return nxt if due is not None and due <= now else None


def superseded_note(nxt: str) -> str:
    return f"superseded by occurrence {nxt}, due before it could start"


class Busy(Enum):
    """What a claim does when the job's lock is held by an earlier run."""

    WAIT_FOR_INSTANT = "wait_for_instant"
    """Claimed ahead: the holder may still end before the instant; wait for the lock until
    then, and claim again."""
    SKIP = "skip"
    """``forbid``: record the occurrence ``skipped``; it never starts later."""
    KILL_AND_WAIT = "kill_and_wait"
    """``replace``: ask the holder to kill its run, wait for the lock, claim again."""
    WAIT = "wait"
    """Wait for the lock a little (the holder is unknown or just gone), claim again."""


def when_busy(concurrency: str, early: float, holder_known: bool) -> Busy:
    """The claim found the lock held (``early``: seconds until the instant)."""
    if concurrency == "forbid" and early > 0:
        return Busy.WAIT_FOR_INSTANT
    if concurrency == "forbid" and holder_known:
        return Busy.SKIP
    if concurrency == "replace" and holder_known and early > 0:
        return Busy.WAIT_FOR_INSTANT
    if concurrency == "replace" and holder_known:
        return Busy.KILL_AND_WAIT
    return Busy.WAIT


def split_missed(missed: Iterable[datetime], horizon: datetime
                 ) -> tuple[list[datetime], list[datetime]]:
    """Catch-up occurrences (record now: past their starting deadline, ``horizon``;
    record later: live workers may still claim them)."""
    now: list[datetime] = []
    later: list[datetime] = []
    for instant in missed:
        (now if instant < horizon else later).append(instant)
    return now, later


def missed_settle(instant: datetime, now: datetime, starting_deadline: float,
                  session_ttl: float) -> float:
    """Seconds from ``now`` until a restarting worker records ``missed`` an occurrence the
    catch-up left to live workers (younger than its starting deadline, not the one it
    runs): one second past the earlier of its starting deadline and two session TTLs after
    its instant. A live worker that fired it has claimed it by then — its claim does not
    wait longer for the store (the catch-up just read it) nor for a dead holder's lock
    (gone with its lease within a TTL) — so after that nobody will, and a record a whole
    starting deadline later was no record at all when this worker died first."""
    settle = min(starting_deadline, 2 * session_ttl) + 1.0
    return max(0.0, (instant - now).total_seconds() + settle)


missed_while_suspended = last_due_while_suspended
"""The occurrence ``jobs resume`` records ``skipped`` (:mod:`scheduler.suspension`)."""


def not_due(occ: str, now: datetime) -> bool:
    """True for the occurrence of a claim sent ahead that waits for its instant."""
    instant = occurrence_instant(occ)
    return instant is not None and instant > now


# ------------------------------------------------------------------ running
def end_status(result: RunResult, kill_reason: str | None) -> str:
    """The status an attempt ended with."""
    if kill_reason is not None:
        return "lost" if kill_reason.startswith("deadman") else "killed"
    if result.timed_out:
        return "timeout"
    if result.killed:
        return "killed"
    return "succeeded" if result.exit_code == 0 else "failed"


def not_started_status(kill_reason: str | None) -> str:
    """The status of a claim that must not start: killed on request, else lost (its
    session is gone, or the deadman killed it)."""
    return "killed" if kill_reason and not kill_reason.startswith("deadman") else "lost"


def retry_due(status: str, attempt: int, retries: int, kill_reason: str | None,
              stopping: bool) -> bool:
    """True if a failed or timed-out attempt is tried again (``attempt`` counts from 1)."""
    return (status in ("failed", "timeout") and attempt <= retries
            and kill_reason is None and not stopping)


# ------------------------------------------------------------------ reaping
def first_for(job: str, key: str, holder: str, lease: int, *, me: str, my_lease: int,
              eligible: Sequence[str], live: Mapping[str, int]) -> bool:
    """True if ``me`` is the worker to act on a possibly lost run of ``job`` whose holder is
    ``holder`` on ``lease``: the first in rendezvous order for ``key`` among the workers that
    could re-run the job (``eligible``; among all live workers if none is left), leaving out
    the holder's session — the one presumed dead — but not a new session of a holder that
    restarted under the same name. ``live`` maps each live worker to its session lease."""
    def same_session(w: str) -> bool:
        if w != holder:
            return False
        current = my_lease if w == me else live.get(w, 0)
        return not lease or current == lease
    others = [w for w in eligible if not same_session(w)] or sorted(
        w for w in set(live) | {me} if not same_session(w))
    return bool(others) and rank_workers(job, key, others)[0] == me


Parked = tuple[str, bytes, int, int]
"""A lock deletion waiting to be settled: (job, holder value, token, revision)."""


def settle_parked(parked: Mapping[int, Sequence[Parked]], read_revision: int,
                  live: set[int]) -> tuple[dict[int, list[Parked]], list[Parked]]:
    """After one read of the live leases at ``read_revision``: the deletions still parked
    (newer than the read), and those to check against the store (their lease was not
    live at the read, so it expired rather than being released by its holder)."""
    keep: dict[int, list[Parked]] = {}
    check: list[Parked] = []
    for lease, items in parked.items():
        settled = [d for d in items if d[3] <= read_revision]
        newer = [d for d in items if d[3] > read_revision]
        if newer:
            keep[lease] = newer
        if lease not in live:
            check.extend(settled)
    return keep, check


def rerun_due(on_lost: str, started_at: float, eligible: bool, deadline_left: float | None
              ) -> bool:
    """True if a run just marked lost is taken over and run here: ``on_lost: rerun``, it
    provably never started, this worker may run it, and its starting deadline holds
    (``deadline_left`` None: not a scheduled occurrence)."""
    return (deadline_left is not None and on_lost == "rerun" and started_at == 0
            and eligible and deadline_left >= 0)


def active_record(raw: bytes) -> RunRecord | None:
    """The run record in ``raw`` if it is active (claimed, running, retrying), else None;
    only records whose bytes say so are decoded."""
    if ACTIVE_STATUS.search(raw) is None:
        return None
    try:
        rec = RunRecord.decode(raw)
    except (ValueError, TypeError):
        return None
    return rec if rec.status in ACTIVE else None


class Sweep(Enum):
    """What the sweep makes of an active run record."""

    SKIP = "skip"
    """Not a suspect: its job is unknown here, this worker runs it, or its claimant's
    session is alive (or young enough, for a record without a lease)."""
    ASK = "ask"
    """Ask the store whether the claimant's lease is alive, then decide again."""
    SUSPECT = "suspect"
    """Its claimant's session is gone: lost, if this worker is first for it."""


def sweep_verdict(rec: RunRecord, *, known_job: bool, running_here: bool,
                  live: set[int], alive: Mapping[int, bool], now: float,
                  session_ttl: float) -> Sweep:
    """The sweep's look at one active record. ``live``: the leases the workers view shows;
    ``alive``: what the store said of other leases in this pass; ``now``: wall-clock
    seconds."""
    if not known_job or running_here:
        return Sweep.SKIP
    if rec.lease:
        if rec.lease in live:
            return Sweep.SKIP  # its claimant's session is registered: alive
        if rec.lease not in alive:
            return Sweep.ASK
        return Sweep.SKIP if alive[rec.lease] else Sweep.SUSPECT
    if now - rec.claimed_at < 2 * session_ttl:
        return Sweep.SKIP  # an old-format record: give its holder a session's time
    return Sweep.SUSPECT


class Orphan(Enum):
    """What to do with a lock on this worker's session for a run it does not track."""

    ABANDON = "abandon"
    """A claim whose answer was lost: record it never started, free its lock."""
    LOST = "lost"
    """A run whose task ended without its final write: record it lost."""
    RELEASE = "release"
    """The record is settled or not this run's: free the stray lock."""


def orphan_action(holder_run_id: str, rec: RunRecord | None) -> Orphan:
    if rec is None or rec.run_id != holder_run_id or rec.status not in ACTIVE:
        return Orphan.RELEASE
    return Orphan.ABANDON if rec.status == "claimed" else Orphan.LOST


# ------------------------------------------------------------------ housekeeping
def prunable(records: Sequence[tuple[str, bytes]], count: int, history_limit: int,
             horizon: datetime, batch_max: int) -> list[int]:
    """Which of a job's oldest run records (``(occurrence, value)``, in key order) to
    delete so ``history_limit`` remain of ``count``: never one young enough (at or after
    ``horizon``) to be claimed again, nor an active one, nor one whose key is not an
    occurrence; at most ``batch_max`` in one go. Keys sort by occurrence, so the first
    record too young ends the look (the rest are younger). Returns their indexes."""
    excess = count - history_limit
    doomed: list[int] = []
    if excess <= 0:
        return doomed
    for i, (occ, raw) in enumerate(records[:min(excess, batch_max)]):
        instant = occurrence_instant(occ) if valid_occurrence(occ) else None
        if instant is None:
            continue  # not ours to judge
        if instant >= horizon:
            break
        if ACTIVE_STATUS.search(raw) is not None:
            continue
        doomed.append(i)
    return doomed


@dataclass
class Compaction:
    """The revisions a worker sampled (monotonic seconds, revision), oldest first, and the
    retention they are kept for."""

    retention: float
    samples: list[tuple[float, int]]

    def target(self, now: float) -> int:
        """Drop the samples at least ``retention`` old; the newest of them is the revision
        to compact to (0: none yet)."""
        target = 0
        while self.samples and self.samples[0][0] <= now - self.retention:
            target = self.samples.pop(0)[1]
        return target


def compacts(me: str, workers: Iterable[str], turn: str) -> bool:
    """True if ``me`` is the live worker that compacts in period ``turn``."""
    return rank_workers("\x00compact", turn, set(workers) | {me})[0] == me
