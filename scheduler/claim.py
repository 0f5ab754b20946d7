"""The claim protocol: every state change of a run is one guarded txn.

Keys (``scheduler.keys``): the run record ``/cron/runs/<job>/<occurrence>`` and the job lock
``/cron/lock/<job>`` on the worker's session lease.

* **claim**: ``create_revision(run) == 0`` (this occurrence was never claimed) and, unless the
  job allows concurrent runs, ``create_revision(lock) == 0`` — then put the run record
  (``claimed``) and the lock. The txn's revision is the run's **fencing token**. Because the
  run record outlives the run (until pruned well past the starting deadline), a second claim
  of the same occurrence fails however late or skewed the second worker is. A ``forbid`` or
  ``replace`` occurrence is also claimed in order: the next occurrence's record absent, the
  previous one's present when the claimant fired it (``claim``'s ``unrecorded`` and
  ``recorded``; docs/scheduling.md, "The order is the store's").
* **takeover** (``on_lost: rerun`` only): a run found ``lost`` while still ``claimed`` (it
  never started) may be claimed again: ``mod_revision(run) == seen`` and the lock free.
* **every later write** (start, finish, retry) compares ``mod_revision(run)`` with the revision
  of this worker's own last write to it, so a run that was declared lost (or taken over)
  cannot be written by its old holder. Finishing also deletes the lock in a nested txn that
  compares ``create_revision(lock) == token``: a lock held by someone else is never touched.
* **lost**: a run record still ``claimed``/``running`` whose lock is gone (its holder's
  lease expired) is marked ``lost`` by whoever notices, guarded by its mod revision.
* **hand back**: the one case where a run record goes before it is pruned. A claim sent
  ahead of its instant whose job was suspended or deleted meanwhile is undone: the record is
  deleted only if its mod revision is still the claim's (nothing was written about the run:
  it never started), the lock only if its create revision is the token.
* **spec**: a claim or takeover also compares the job spec's mod revision with the one the
  occurrence was planned from (``spec_guard``): a deleted or edited job's old occurrences
  are refused, and nothing is recorded for them (the new spec's timer takes over).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coord.client import (
    Client,
    ClientError,
    Compare,
    KeyValue,
    LeaseNotFoundError,
    RangeResult,
    TxnResult,
    delete,
    put,
    txn_op,
)
from scheduler.keys import job_key, lock_key, run_key, suspend_key
from scheduler.occurrence import MANUAL_SUFFIX
from scheduler.records import ACTIVE, LockHolder, RunRecord

BATCH_MAX = 32
"""Most guarded txns coalesced into one store txn (etcd allows 128 ops per level and a
request of 1.5 MiB; a finish carries up to 4 KiB of output tail)."""

@dataclass
class Identity:
    """Who is claiming: the worker's name, host, pid and session lease."""

    worker: str
    lease: int
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)


@dataclass
class Claim:
    """A run this worker owns. ``revision`` is the mod revision of its last write to the
    run record; every further write compares it."""

    job: str
    occurrence: str
    token: int
    revision: int
    record: RunRecord
    holds_lock: bool
    lease: int = 0
    """The session lease the claim was made under: if it is no longer the worker's live
    session, the run must not start."""
    late: bool = False
    """Its answer was lost (adopted) or came back late: its lock may have gone meanwhile
    (the session lease expired while the worker waited), so the run is started only
    after :meth:`ClaimStore.start_held` says the lock is still its."""


class TxnBatcher:
    """Coalesces the guarded txns submitted in one event-loop turn into one store txn.

    Each submission (its compares and success ops) becomes a nested txn of the batch, so it
    is decided by its own compares exactly as if it had been sent alone: its caller gets a
    :class:`TxnResult` with its own ``succeeded`` and responses, and the batch's header
    (revision). One batch never holds two submissions for the same job (they would touch
    the same lock key, which a txn refuses) nor more than ``BATCH_MAX``. If the batch fails
    (store unavailable, our lease gone), every submission gets the error: its outcome is
    unknown, as for a lone txn, and the callers' retry logic applies unchanged — except for
    ``LeaseNotFound``, which one member's lease causes: then each is sent again alone.

    When many jobs fire at the same instant, their claims (and later their finishes) go to
    the store as a handful of txns instead of one each: the client's per-call CPU cost and
    the store's per-proposal cost are paid once per batch.
    """

    def __init__(self, client: Client, limit: int = BATCH_MAX) -> None:
        self.client = client
        self.limit = limit
        self.batches = 0
        """Store txns sent (a batch of one included)."""
        self._pending: list[tuple[list[Any], list[Any], asyncio.Future[TxnResult]]] = []
        self._jobs: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_sent: Callable[[float], None] | None = None
        """Called with each batch's round-trip time in seconds (the worker's stage figures)."""

    def submit(self, job: str, compare: list[Any], success: list[Any]) -> asyncio.Future[TxnResult]:
        loop = asyncio.get_running_loop()
        if job in self._jobs or len(self._pending) >= self.limit:
            self._flush()
        if not self._pending:
            loop.call_soon(self._flush)
        fut: asyncio.Future[TxnResult] = loop.create_future()
        self._pending.append((compare, success, fut))
        self._jobs.add(job)
        return fut

    def _flush(self) -> None:
        batch, self._pending, self._jobs = self._pending, [], set()
        if batch:
            self._send_soon(batch)

    def _send_soon(self, batch: list[tuple[list[Any], list[Any],
                                           asyncio.Future[TxnResult]]]) -> None:
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[list[Any], list[Any],
                                           asyncio.Future[TxnResult]]]) -> None:
        self.batches += 1
        t0 = time.monotonic()
        try:
            if len(batch) == 1:
                compare, success, _ = batch[0]
                results = [await self.client.txn(compare, success, [])]
            else:
                res = await self.client.txn([], [txn_op(c, s, []) for c, s, _ in batch], [])
                results = []
                for r in res.responses:
                    assert isinstance(r, TxnResult)
                    results.append(TxnResult(res.header, r.succeeded, r.responses))
        except LeaseNotFoundError as err:
            if len(batch) > 1:  # one member's lease: the others must not fail with it
                for item in batch:
                    self._send_soon([item])
                return
            if not batch[0][2].done():
                batch[0][2].set_exception(err)
            return
        except ClientError as err:
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
            return
        except BaseException as err:  # a bug or a cancellation: no caller may hang on it
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(ClientError(f"batched txn failed: {err!r}"))
            raise
        if self.on_sent is not None:
            self.on_sent(time.monotonic() - t0)
        for (_, _, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)


def spec_guard(job: str, occurrence: str, spec_revision: int) -> list[Any]:
    """The claim's compare on the job's spec: a scheduled occurrence is claimed only while
    ``/cron/jobs/<job>`` is still the spec it was planned from (mod revision
    ``spec_revision``), so a worker whose jobs view is stale (cut off, or its claim late on
    the wire) cannot start a deleted job (create revision 0, so mod revision 0) or an
    edited job's old schedule. A manual occurrence (``jobs trigger``) only needs the job to
    exist. ``spec_revision`` 0: unknown, nothing compared."""
    if spec_revision <= 0:
        return []
    if MANUAL_SUFFIX in occurrence:
        return [Compare.create(job_key(job)) > 0]
    return [Compare.mod(job_key(job)) == spec_revision]


def _run_from(result: RangeResult) -> tuple[RunRecord | None, KeyValue | None]:
    if not result.kvs:
        return None, None
    kv = result.kvs[0]
    try:
        return RunRecord.decode(kv.value), kv
    except ValueError as err:
        # Someone wrote garbage here: the occurrence has a record, so it is taken (never
        # claimed or written by this worker); the placeholder is nobody's run.
        return RunRecord(job="", occurrence="", status="unreadable", note=str(err)), kv


class ClaimStore:
    """The claim protocol's txns against any etcd-v3 store."""

    def __init__(self, client: Client, me: Identity) -> None:
        self.client = client
        self.me = me
        self.batcher = TxnBatcher(client)
        self.txns = 0
        """Claim txns sent (for the claims-per-occurrence figure)."""
        self.attempted: dict[tuple[str, str], set[str]] = {}
        """(job, occurrence) → run ids of this worker's claim attempts, so a claim whose
        answer was lost can be recognised (and only ours) when read back. The caller drops
        an entry (``forget``) once it is done with the occurrence."""
        self.outbox: Callable[[RunRecord], list[Any]] | None = None
        """The notification outbox puts (``scheduler.notify``) that go with a record's
        final write, in the same txn."""

    def _outbox(self, rec: RunRecord) -> list[Any]:
        return self.outbox(rec) if self.outbox is not None else []

    def _new_record(self, job: str, occurrence: str, attempt: int,
                    spec_revision: int) -> RunRecord:
        return RunRecord(job=job, occurrence=occurrence, status="claimed", worker=self.me.worker,
                         host=self.me.host, pid=self.me.pid, run_id=uuid.uuid4().hex,
                         attempt=attempt, claimed_at=time.time(), spec_revision=spec_revision,
                         lease=self.me.lease)

    def _holder(self, rec: RunRecord) -> LockHolder:
        return LockHolder(worker=self.me.worker, host=self.me.host, pid=self.me.pid,
                          occurrence=rec.occurrence, run_id=rec.run_id,
                          started_at=rec.claimed_at, lease=self.me.lease)

    async def claim(self, job: str, occurrence: str, *, exclusive: bool,
                    spec_revision: int = 0, recorded: str | None = None,
                    unrecorded: str | list[str] | None = None) -> Claim | None:
        """Try to claim (job, occurrence). ``None``: someone else has it, the job is busy,
        or it is suspended: the claim also requires ``/cron/suspend/<job>`` absent, so a
        worker whose suspensions view is stale (cut off from the store while the job was
        suspended) cannot start it; the firing part waits and sees the suspension. Nor
        is it claimed once the job's spec changed or went (:func:`spec_guard`).

        Order (``forbid``/``replace``, same txn, no read): ``unrecorded`` names the job's
        next occurrence (or a list: the next one and those due after it up to now, for
        a claim made late), which must have no record yet (an occurrence never starts after
        a later one was claimed or settled); ``recorded`` names the previous one, which
        must have a record (a claim does not overtake an older occurrence whose claim is
        still pending, e.g. both waiting out a store outage)."""
        rec = self._new_record(job, occurrence, 1, spec_revision)
        self.attempted.setdefault((job, occurrence), set()).add(rec.run_id)
        rk, lk = run_key(job, occurrence), lock_key(job)
        lock_put = put(lk, self._holder(rec).encode(), lease=self.me.lease)
        not_suspended = Compare.create(suspend_key(job)) == 0
        order = spec_guard(job, occurrence, spec_revision)
        later = [unrecorded] if isinstance(unrecorded, str) else (unrecorded or [])
        order += [Compare.create(run_key(job, occ)) == 0 for occ in later]
        if recorded is not None:
            order.append(Compare.create(run_key(job, recorded)) > 0)
        if exclusive:
            compare = [Compare.create(rk) == 0, Compare.create(lk) == 0, not_suspended,
                       *order]
            success = [put(rk, rec.encode()), lock_put]
        else:
            # Concurrent runs allowed: the lock shows one of them, if it is free.
            compare = [Compare.create(rk) == 0, not_suspended, *order]
            success = [put(rk, rec.encode()), txn_op([Compare.create(lk) == 0], [lock_put], [])]
        self.txns += 1
        res = await self.batcher.submit(job, compare, success)
        if not res.succeeded:
            return None
        holds = exclusive or bool(res.responses[-1] and isinstance(res.responses[-1], TxnResult)
                                  and res.responses[-1].succeeded)
        rec.fencing_token = res.revision
        return Claim(job, occurrence, res.revision, res.revision, rec, holds, self.me.lease)

    async def takeover(self, job: str, occurrence: str, lost: RunRecord,
                       seen_revision: int, spec_revision: int = 0,
                       unrecorded: str | None = None) -> Claim | None:
        """Claim again a run that was lost before it started (``on_lost: rerun``);
        ``unrecorded`` as for :meth:`claim` (a re-run never starts after a later
        occurrence of a ``forbid``/``replace`` job was claimed)."""
        rec = self._new_record(job, occurrence, lost.attempt + 1, spec_revision)
        self.attempted.setdefault((job, occurrence), set()).add(rec.run_id)
        rk, lk = run_key(job, occurrence), lock_key(job)
        order = spec_guard(job, occurrence, spec_revision)
        if unrecorded is not None:
            order.append(Compare.create(run_key(job, unrecorded)) == 0)
        self.txns += 1
        res = await self.client.txn(
            [Compare.mod(rk) == seen_revision, Compare.create(lk) == 0, *order],
            [put(rk, rec.encode()), put(lk, self._holder(rec).encode(), lease=self.me.lease)], [])
        if not res.succeeded:
            return None
        rec.fencing_token = res.revision
        return Claim(job, occurrence, res.revision, res.revision, rec, True, self.me.lease)

    def adopt(self, rec: RunRecord, kv: KeyValue, exclusive: bool) -> Claim | None:
        """The claim this worker made but never heard back about, if ``rec`` is it: the
        record still says ``claimed`` and carries the run id of our latest attempt. A claim
        and a takeover both create the lock in the txn that wrote the record, so the lock's
        token is the record's mod revision."""
        key = (rec.job, rec.occurrence)
        if rec.status != "claimed" or rec.run_id not in self.attempted.get(key, ()):
            return None
        rec.fencing_token = kv.mod_revision
        # The lease the claim was made on (its record says), not this store's: the
        # attempts carry over to a new session's store, and a claim of the lost session
        # labelled with the new lease passed the start's session check while its lock
        # expired with the old lease (schedsim seed 545205, F17).
        return Claim(rec.job, rec.occurrence, kv.mod_revision, kv.mod_revision, rec,
                     exclusive, rec.lease or self.me.lease, late=True)

    def forget(self, job: str, occurrence: str) -> None:
        self.attempted.pop((job, occurrence), None)

    async def update(self, claim: Claim, **changes: Any) -> bool:
        """Write new fields of the run record, fenced. False: the run is no longer ours."""
        for k, v in changes.items():
            setattr(claim.record, k, v)
        rk = run_key(claim.job, claim.occurrence)
        res = await self.batcher.submit(claim.job, [Compare.mod(rk) == claim.revision],
                                        [put(rk, claim.record.encode())])
        if res.succeeded:
            claim.revision = res.revision
        return res.succeeded

    async def start_held(self, claim: Claim, **changes: Any) -> bool:
        """:meth:`update`, also requiring the job's lock still this run's (its create
        revision the token): the ``running`` mark of a late claim, written before its
        process exists. False: not ours any more (lost, or its lock gone with an expired
        session lease and perhaps taken by a later occurrence)."""
        for k, v in changes.items():
            setattr(claim.record, k, v)
        rk = run_key(claim.job, claim.occurrence)
        res = await self.batcher.submit(
            claim.job, [Compare.mod(rk) == claim.revision,
                        Compare.create(lock_key(claim.job)) == claim.token],
            [put(rk, claim.record.encode())])
        if res.succeeded:
            claim.revision = res.revision
        return res.succeeded

    async def finish(self, claim: Claim, **changes: Any) -> bool:
        """Record the final state and release the lock if it is still this run's."""
        for k, v in changes.items():
            setattr(claim.record, k, v)
        rk, lk = run_key(claim.job, claim.occurrence), lock_key(claim.job)
        res = await self.batcher.submit(
            claim.job, [Compare.mod(rk) == claim.revision],
            [put(rk, claim.record.encode()),
             txn_op([Compare.create(lk) == claim.token], [delete(lk)], []),
             *self._outbox(claim.record)])
        if res.succeeded:
            claim.revision = res.revision
        return res.succeeded

    async def hand_back(self, claim: Claim) -> bool:
        """Undo a claim whose run never started: delete its run record (only if it is
        still exactly what the claim wrote) and its lock (only if still this run's), so
        that another worker may claim the occurrence. False if the record had moved on."""
        rk, lk = run_key(claim.job, claim.occurrence), lock_key(claim.job)
        res = await self.batcher.submit(
            claim.job, [Compare.mod(rk) == claim.revision],
            [delete(rk), txn_op([Compare.create(lk) == claim.token], [delete(lk)], [])])
        return res.succeeded

    async def release_lock(self, claim: Claim) -> None:
        """Delete the lock if it is this run's (used when a claim is abandoned)."""
        lk = lock_key(claim.job)
        await self.client.txn([Compare.create(lk) == claim.token], [delete(lk)], [])

    async def mark_lost(self, job: str, occurrence: str, note: str, *, run_id: str,
                        token: int | None) -> RunRecord | None:
        """Mark the run ``run_id`` lost: it is still active but its lock (created at revision
        ``token``) is gone. Returns the lost record (``fencing_token`` = the revision of this
        write, which a takeover compares) or None if the record is another run's, not
        active, or changed meanwhile."""
        rk, lk = run_key(job, occurrence), lock_key(job)
        cur = await self.client.get(rk)
        rec, kv = _run_from(cur)
        if rec is None or kv is None or rec.status not in ACTIVE or rec.run_id != run_id:
            return None
        # The lock may meanwhile be held by a later run of the same job: only *this* run's
        # lock (created at ``token``) must be gone. ``token=None``: the caller saw the run's
        # session lease expired, which takes its lock with it.
        started = rec.status != "claimed"
        rec.status = "lost"
        rec.note = note + ("" if started else " (before it started)")
        rec.finished_at = time.time()
        compare = [Compare.mod(rk) == kv.mod_revision]
        if token is not None:
            compare.append(Compare.create(lk) != token)
        res = await self.client.txn(compare, [put(rk, rec.encode()), *self._outbox(rec)], [])
        if not res.succeeded:
            return None
        rec.fencing_token = res.revision  # the revision a takeover compares against
        return rec

    async def record_missed(self, job: str, occurrence: str, *, status: str = "missed",
                            note: str = "not started within starting_deadline",
                            spec_revision: int = 0, if_recorded: str | None = None) -> bool:
        """Record an occurrence that will never run (only if no record exists): ``missed``
        (nobody ran it in time) or ``skipped`` (a ``forbid`` job's previous run was still
        running at its instant), with the reason in ``note``. ``if_recorded``: only if that
        (later) occurrence has a record (then no claim of this one can land)."""
        rk = run_key(job, occurrence)
        rec = RunRecord(job=job, occurrence=occurrence, status=status,
                        worker=self.me.worker, finished_at=time.time(), note=note,
                        spec_revision=spec_revision)
        compare = [Compare.create(rk) == 0]
        if if_recorded is not None:
            compare.append(Compare.create(run_key(job, if_recorded)) > 0)
        res = await self.client.txn(compare, [put(rk, rec.encode()), *self._outbox(rec)], [])
        return res.succeeded

    async def run_exists(self, job: str, occurrence: str) -> bool:
        return bool((await self.client.get(run_key(job, occurrence), count_only=True)).count)

    async def get_run_kv(self, job: str,
                         occurrence: str) -> tuple[RunRecord | None, KeyValue | None]:
        return _run_from(await self.client.get(run_key(job, occurrence)))


__all__ = ["ACTIVE", "Claim", "ClaimStore", "Identity", "LockHolder", "RunRecord", "spec_guard"]
