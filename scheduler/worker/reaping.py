"""Reaping: runs whose holder lost its session are marked lost (and re-run if asked).

Lock deletions reach every worker on the locks watch; only the first live worker in
rendezvous order for the run (``decide.first_for``) looks further. A lease expiry deletes
every key on the lease in one revision, the holder's ``/cron/workers/`` key included; so if
that key is still there at a revision at or after the deletion, the lease was alive and the
deletion was the holder's own (a normal finish): no store round trip. While the workers
view still shows the lease, the deletion is parked (``unsure``) until the view drops the
lease (→ check now) or one read of ``/cron/workers/`` at a later revision settles it. A
lease the view no longer shows is checked at once. The sweep is the safety net: every
``sweep_interval`` it reads every active run record and checks its claimant's lease; it
also frees locks on this worker's session that no run of it tracks (orphans).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time

import structlog

from coord.client import ClientError, Compare, WatchBatch, delete, prefix_end
from scheduler import keys
from scheduler.claim import Claim, LockHolder
from scheduler.decode import report_bad
from scheduler.plan import occurrence_instant
from scheduler.spec import JobSpec
from scheduler.worker import decide
from scheduler.worker.decide import Orphan, Parked
from scheduler.worker.running import Runner
from scheduler.worker.state import JobEntry, Shared

log = structlog.get_logger("scheduler.worker")

SWEEP_PAGE = 500
"""Run records read per request by the sweep."""
UNSURE_EVERY = 0.5
"""Seconds between the reads that settle lock deletions on a lease still seen alive."""


class Reaper:
    def __init__(self, ctx: Shared, runner: Runner) -> None:
        self.ctx = ctx
        self.runner = runner
        self.unsure: dict[int, list[Parked]] = {}
        """lease → lock deletions (job, holder, token, revision) on a lease the workers view
        still showed alive: a normal finish, unless the lease turns out to have expired."""
        self._unsure_wake = asyncio.Event()

    def first_for(self, spec: JobSpec, key: str, holder: str, lease: int) -> bool:
        """True if this worker is the one to act on a possibly lost run of ``spec``."""
        ctx = self.ctx
        return decide.first_for(spec.name, key, holder, lease, me=ctx.config.name,
                                my_lease=ctx.store.me.lease if ctx.store else 0,
                                eligible=ctx.eligible(spec), live=ctx.worker_leases)

    # ------------------------------------------------------------------ lock deletions
    async def on_lock_batch(self, batch: WatchBatch) -> None:
        ctx = self.ctx
        for e in batch.events:
            job = keys.job_from(e.kv.key, keys.LOCKS)
            if job is None:
                report_bad(e.kv.key, e.kv.mod_revision, "not /cron/lock/<valid job name>",
                           "locks")
                continue
            if e.is_put:
                ctx.held[job] = e.kv.value
                continue
            entry = ctx.jobs.get(job)
            if entry is not None:
                entry.lock_freed.set()
            prev = e.prev_kv
            if prev is not None:
                self._lock_deleted(job, prev.value, prev.create_revision, prev.lease,
                                   e.kv.mod_revision)

    def _lock_deleted(self, job: str, raw_holder: bytes, token: int, lease: int,
                      revision: int) -> None:
        """A lock (created at ``token`` on ``lease``) was deleted at ``revision``: a run
        finished or was released, or its holder's session expired and the run is lost."""
        # A deletion on our own session's lease is ours (a finish): first_for leaves the
        # holder's session out of the ranking, so this worker is never the one to check it.
        if not self._responsible_for_lost(job, raw_holder, lease):
            return
        if lease and lease in self.ctx.worker_leases.values():
            self.unsure.setdefault(lease, []).append((job, raw_holder, token, revision))
            self._unsure_wake.set()
            return
        self.ctx.spawn(self._check_lost(job, raw_holder, token), f"lost:{job}")

    def _responsible_for_lost(self, job: str, raw_holder: bytes, lease: int) -> bool:
        try:
            holder = LockHolder.decode(raw_holder)
        except (ValueError, TypeError):
            return False
        entry = self.ctx.jobs.get(job)
        if entry is None or (job, holder.occurrence) in self.ctx.running:
            return False
        return self.first_for(entry.spec, holder.occurrence, holder.worker, lease)

    def lease_ended(self, lease: int) -> None:
        """The workers view no longer shows ``lease``: check its parked deletions now."""
        for job, raw, token, _ in self.unsure.pop(lease, []):
            self.ctx.spawn(self._check_lost(job, raw, token), f"lost:{job}")

    def leases_listed(self, live: set[int]) -> None:
        """The workers view was listed: settle the parked deletions of leases gone from it."""
        for lease in [lease for lease in self.unsure if lease not in live]:
            self.lease_ended(lease)

    async def confirm_unsure(self) -> None:
        """Settle parked lock deletions with one read of ``/cron/workers/`` (keys only) per
        round, at most every ``UNSURE_EVERY`` seconds, instead of one read per deletion."""
        while True:
            await self._unsure_wake.wait()
            await asyncio.sleep(UNSURE_EVERY)
            self._unsure_wake.clear()
            if not self.unsure:
                continue
            try:
                r = await self.ctx.client.get(keys.WORKERS, prefix=True, keys_only=True)
            except ClientError as err:
                log.debug("lost.confirm_failed", error=str(err))
                self._unsure_wake.set()
                continue
            keep, check = decide.settle_parked(self.unsure, r.revision,
                                               {kv.lease for kv in r.kvs})
            self.unsure = keep
            if keep:  # deletions newer than the read: next round
                self._unsure_wake.set()
            for job, raw, token, _ in check:
                self.ctx.spawn(self._check_lost(job, raw, token), f"lost:{job}")

    async def _check_lost(self, job: str, raw_holder: bytes, token: int) -> None:
        """A lock (created at ``token``) vanished and its holder's session may be gone. If
        its run is still active, mark it lost (the txns are guarded)."""
        try:
            holder = LockHolder.decode(raw_holder)
        except (ValueError, TypeError):
            return
        entry = self.ctx.jobs.get(job)
        if entry is None or (job, holder.occurrence) in self.ctx.running:
            return
        await self.lost(entry, holder.occurrence, holder.run_id, token,
                        note=f"holder {holder.worker} lost its session")

    async def lost(self, entry: JobEntry, occ: str, run_id: str, token: int | None,
                   note: str) -> None:
        """Mark one run lost and, for ``on_lost: rerun``, re-run it if it never started."""
        ctx = self.ctx
        store = ctx.store
        assert store is not None
        job = entry.spec.name
        if ctx.stopping:  # it could not re-run it: the sweep of a live worker will
            return
        try:
            lost = await store.mark_lost(job, occ, note=note, run_id=run_id, token=token)
        except ClientError:
            return
        if lost is None:
            return
        log.warning("run.lost", job=job, occurrence=occ, worker=lost.worker,
                    started=lost.started_at > 0)
        instant = occurrence_instant(occ)
        if instant is None or not decide.rerun_due(
                entry.spec.on_lost, lost.started_at,
                ctx.config.name in ctx.eligible(entry.spec),
                ctx.deadline(entry.spec, instant)):
            return
        try:
            claim = await store.takeover(
                job, occ, lost, lost.fencing_token, spec_revision=entry.revision,
                unrecorded=decide.next_in_order(entry.spec.concurrency, occ,
                                                entry.spec.timetable()))
        except ClientError:
            rec, kv = None, None
            with contextlib.suppress(ClientError):
                rec, kv = await store.get_run_kv(job, occ)
            claim = store.adopt(rec, kv, True) if rec is not None and kv is not None else None
        store.forget(job, occ)
        if claim is not None:
            log.info("run.rerun", job=job, occurrence=occ)
            # A task of its own (named run:…), so a graceful stop waits for it and a
            # cancelled sweep never leaves its process behind.
            ctx.spawn(self.runner.execute(entry, claim, instant), f"run:{job}:{occ}")

    # ------------------------------------------------------------------ sweep
    async def sweep(self) -> None:
        """Every ``sweep_interval`` every worker frees its orphaned locks and looks
        (``sweep_runs``) for active runs whose claimant's session lease has expired — runs
        the lock events did not report (compaction, every worker down at the time, runs
        without the lock) — and marks them lost."""
        interval = self.ctx.config.sweep_interval
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(ClientError):
                await self.release_orphans()
            try:
                await self.sweep_runs(str(int(time.time() // interval)))
            except ClientError as err:
                log.debug("sweep.failed", error=str(err))

    async def release_orphans(self) -> None:
        """Free locks held on this worker's session for runs it is not running (a claim
        whose answer was lost and never adopted): otherwise they would block the job for
        as long as this worker lives."""
        ctx = self.ctx
        store = ctx.store
        if store is None:
            return
        r = await ctx.client.get(keys.LOCKS, prefix=True)
        for kv in r.kvs:
            if kv.lease != store.me.lease:
                continue
            try:
                holder = LockHolder.decode(kv.value)
            except (ValueError, TypeError):
                continue
            job = keys.job_from(kv.key, keys.LOCKS)
            if job is None or (job, holder.occurrence) in ctx.running:
                continue
            # Re-check after a moment: a claim may be between its txn and execute.
            await asyncio.sleep(1.0)
            if (job, holder.occurrence) in ctx.running:
                continue
            rec, rkv = await store.get_run_kv(job, holder.occurrence)
            action = decide.orphan_action(holder.run_id, rec if rkv is not None else None)
            if action is Orphan.RELEASE or rec is None or rkv is None:
                res = await ctx.client.txn([Compare.create(kv.key) == kv.create_revision],
                                           [delete(kv.key)], [])
                if res.succeeded:
                    log.warning("lock.orphan_released", job=job, occurrence=holder.occurrence)
                continue
            # Ours, and this worker no longer tracks it: a claim whose answer was lost
            # (never started), or a run whose task ended without its final write.
            rec.fencing_token = kv.create_revision
            claim = Claim(job, holder.occurrence, kv.create_revision, rkv.mod_revision,
                          rec, True, store.me.lease)
            if action is Orphan.ABANDON:
                await self.runner.abandon(claim, "orphaned claim (its answer was lost)")
            else:
                log.warning("run.orphaned", job=job, occurrence=holder.occurrence)
                with contextlib.suppress(ClientError):
                    await store.finish(claim, status="lost", finished_at=time.time(),
                                       note="orphaned run: its worker lost track of it")

    async def sweep_runs(self, period: str = "") -> None:
        """One pass over every run record, in pages of ``SWEEP_PAGE`` (serializable reads:
        a stale page only delays a finding to the next pass). Only records whose bytes say
        they are active are decoded; a claimant lease that the workers view shows alive is
        not asked about, any other is asked once per pass. Every worker makes the pass and
        acts on the runs it is first for in this period (``first_for``), so a lost run is
        re-run by a worker allowed to run its job."""
        ctx = self.ctx
        start = keys.RUNS.encode()
        end = prefix_end(start)
        live = set(ctx.worker_leases.values())
        alive: dict[int, bool] = {}
        while True:
            r = await ctx.client.get(start, range_end=end, limit=SWEEP_PAGE,
                                     serializable=True)
            for kv in r.kvs:
                rec = decide.active_record(kv.value)
                if rec is None:
                    continue
                entry = ctx.jobs.get(rec.job)
                verdict = functools.partial(
                    decide.sweep_verdict, rec, known_job=entry is not None, live=live,
                    alive=alive, running_here=(rec.job, rec.occurrence) in ctx.running,
                    now=time.time(), session_ttl=ctx.config.session_ttl)
                found = verdict()
                if found is decide.Sweep.ASK:
                    alive[rec.lease] = (await ctx.client.time_to_live(rec.lease)).ttl > 0
                    found = verdict()
                if found is not decide.Sweep.SUSPECT or entry is None:
                    continue
                if not self.first_for(entry.spec, f"sweep:{period}:{rec.occurrence}",
                                      rec.worker, rec.lease):
                    continue
                await self.lost(entry, rec.occurrence, rec.run_id, None,
                                note=f"claimant {rec.worker}'s session expired")
            if not r.more or not r.kvs:
                return
            start = r.kvs[-1].key + b"\0"
