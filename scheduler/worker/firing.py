"""Firing: job timers, rendezvous ranking, claiming (ahead of the instant).

One task per job sleeps until the job's next fire instant (by this worker's clock, which
may be skewed). For each occurrence the live eligible workers are ranked; the first claims
``claim_ahead`` before the instant, the k-th ``k * grace`` after it if nobody has. The claim
txn (``scheduler.claim``) decides; a busy ``forbid`` job waits for its lock within
``starting_deadline`` or skips; ``replace`` asks the holder to kill its run first. A won
claim goes to the running part.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

import structlog

from coord.aiotools import within
from coord.client import ClientError, LeaseNotFoundError, WatchBatch
from scheduler import keys
from scheduler.claim import Claim, LockHolder
from scheduler.decode import report_bad
from scheduler.plan import (
    MANUAL_SUFFIX,
    Timetable,
    catch_up,
    occurrence_id,
    occurrence_instant,
)
from scheduler.spec import JobSpec
from scheduler.worker import decide
from scheduler.worker.decide import Busy
from scheduler.worker.running import Runner
from scheduler.worker.state import JobEntry, Shared

log = structlog.get_logger("scheduler.worker")

GIVE_UP_RETRY = 60.0
"""Seconds past its starting deadline that a worker keeps trying to record an occurrence it
could not claim as ``missed`` (through a store outage)."""


LATER_MAX = 16
"""Most later occurrences a late ``forbid``/``replace`` claim requires unrecorded."""
LATE_ANSWER = 1.0
"""Seconds after which a claim's answer is late: its start is then guarded by a write that
compares its lock (``Claim.late``)."""


def _occ_or_none(instant: datetime | None) -> str | None:
    return None if instant is None else occurrence_id(instant)


class Firing:
    def __init__(self, ctx: Shared, runner: Runner) -> None:
        self.ctx = ctx
        self.runner = runner

    def start(self, entry: JobEntry, since: datetime, holes: Sequence[datetime] = ()) -> None:
        """Start the job's timer, catching up from ``since``; ``holes``: unrecorded young
        occurrences before it (``restart.restart_point``), recorded as the catch-up's."""
        entry.task = self.ctx.spawn(self.job_loop(entry, since, holes),
                                    f"job:{entry.spec.name}")

    # ------------------------------------------------------------------ timers
    async def job_loop(self, entry: JobEntry, since: datetime,
                       holes: Sequence[datetime] = ()) -> None:
        ctx = self.ctx
        spec = entry.spec
        timetable = spec.timetable()
        now = ctx.clock.now()
        prev: datetime | None = None
        for instant in holes:  # young by construction: recorded like the catch-up's below
            left = decide.missed_settle(instant, now, spec.starting_deadline,
                                        ctx.config.session_ttl)
            ctx.spawn(self._record_missed_later(spec, instant, left, timetable),
                      f"missed:{spec.name}")
        if since < now:
            plan = catch_up(timetable, since=since, now=now,
                            starting_deadline=spec.starting_deadline)
            # Occurrences past their starting deadline are recorded missed now; younger
            # ones may still be claimed by live workers (this worker restarted while others
            # kept going), so they are recorded once no live worker can still be claiming
            # them (``missed_settle``), and only if nobody claimed them meanwhile (the
            # record is create-only); for forbid and replace as soon as the next
            # occurrence is claimed (none can start then).
            horizon = now - timedelta(seconds=spec.starting_deadline)
            past, young = decide.split_missed(plan.missed, horizon)
            for instant in past:
                await self.record_missed(spec, instant)
            for instant in young:
                left = decide.missed_settle(instant, now, spec.starting_deadline,
                                            ctx.config.session_ttl)
                ctx.spawn(self._record_missed_later(spec, instant, left, timetable),
                          f"missed:{spec.name}")
            if plan.run is not None:
                self.fire(entry, plan.run, around=decide.Neighbours(
                    next=_occ_or_none(timetable.next_after(plan.run))))
                prev = plan.run
        cursor = max(since, now)
        ahead = ctx.config.claim_ahead
        # The previous occurrence this timer fired (None if it fired none: its claimant
        # is unknown) and the one after the next, for the claims' order compares.
        nxt = timetable.next_after(cursor)
        while nxt is not None:
            following = timetable.next_after(nxt)
            delay = (nxt - ctx.clock.now()).total_seconds() - ahead
            if delay > 0:
                await asyncio.sleep(delay)
            self.fire(entry, nxt, ahead=ahead, around=decide.Neighbours(
                _occ_or_none(prev), _occ_or_none(following)))
            prev, nxt = nxt, following

    async def _record_missed_later(self, spec: JobSpec, instant: datetime,
                                   delay: float, timetable: Timetable) -> None:
        occ = occurrence_id(instant)
        nxt = decide.next_in_order(spec.concurrency, occ, timetable)
        if nxt is None:
            await asyncio.sleep(delay)
        elif await self._overtaken_later(spec, occ, nxt, delay):
            return
        current = self.ctx.jobs.get(spec.name)
        if not self.ctx.stopping and current is not None and current.spec == spec:
            await self.record_missed(spec, instant)

    async def _overtaken_later(self, spec: JobSpec, occ: str, nxt: str,
                               delay: float) -> bool:
        """A ``forbid``/``replace`` occurrence missed while this worker was down: it can
        no longer start once the next one is claimed (the claim requires the next one
        unrecorded), so it is recorded ``missed`` then — guarded by that record — rather
        than a starting deadline later (a worker dying meanwhile left it unrecorded).
        Watches the locks view (no read) until ``delay`` has passed; True once settled."""
        ctx = self.ctx
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            current = ctx.jobs.get(spec.name)
            if ctx.stopping or current is None or current.spec != spec:
                return True
            held = decide.held_occurrence(ctx.held.get(spec.name))
            if held is not None and decide.later_occurrence(
                    spec.concurrency, held, occ) is not None and ctx.store is not None:
                try:
                    note = f"not started before the next occurrence {nxt} was claimed"
                    if await ctx.store.record_missed(
                            spec.name, occ, note=note, spec_revision=ctx.revision(spec),
                            if_recorded=nxt):
                        log.info("run.missed", job=spec.name, occurrence=occ, reason=note)
                        return True
                    if await ctx.store.run_exists(spec.name, occ):
                        return True
                except ClientError:
                    pass  # try again on the next turn
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        return False

    async def record_missed(self, spec: JobSpec, instant: datetime) -> None:
        store = self.ctx.store
        assert store is not None
        occ = occurrence_id(instant)
        try:
            if await store.record_missed(spec.name, occ,
                                         spec_revision=self.ctx.revision(spec)):
                log.info("run.missed", job=spec.name, occurrence=occ)
        except ClientError as err:
            # Every worker that restarts records these; one that fails here says so rather
            # than dropping it silently (the occurrence was not run either way).
            log.warning("run.missed_unrecorded", job=spec.name, occurrence=occ, error=str(err))

    # ------------------------------------------------------------------ occurrences
    def fire(self, entry: JobEntry, instant: datetime, occ: str | None = None,
             ahead: float = 0.0, around: decide.Neighbours = decide.ALONE) -> None:
        """One fire instant of a job (called ``ahead`` seconds before it by the timers):
        the first-ranked worker claims at once (in a task of its own) and starts the process
        at the instant; the k-th looks again ``k * grace`` after the instant (a timer) and
        starts a task only if the locks watch has not shown the occurrence claimed by then."""
        ctx = self.ctx
        spec = entry.spec
        occ = occ or occurrence_id(instant)
        ctx.stats.add("wake", (ctx.clock.now() - instant).total_seconds() + ahead)
        eligible = ctx.check_eligible(spec)
        position = decide.claim_position(spec.name, occ, eligible, ctx.config.name)
        if position is None:
            return
        if position == 0:
            ctx.spawn(self._occurrence(entry, instant, occ, 0, around), f"occ:{spec.name}")
        else:
            early = max(0.0, (instant - ctx.clock.now()).total_seconds())
            asyncio.get_running_loop().call_later(early + position * ctx.config.grace,
                                                  self._backup_due, entry, instant, occ,
                                                  position, around)

    def _backup_due(self, entry: JobEntry, instant: datetime, occ: str, position: int,
                    around: decide.Neighbours) -> None:
        # A spec edited meanwhile does not cancel an occurrence already due (as the first
        # worker's claim is not cancelled either); a deleted or suspended job does.
        ctx = self.ctx
        job = entry.spec.name
        if (ctx.stopping or job not in ctx.jobs or ctx.is_suspended(job)
                or decide.taken(ctx.held.get(job), occ)):
            return
        ctx.spawn(self._occurrence(entry, instant, occ, position, around), f"occ:{job}")

    async def _occurrence(self, entry: JobEntry, instant: datetime, occ: str,
                          position: int, around: decide.Neighbours) -> None:
        spec = entry.spec
        if position > 0:
            assert self.ctx.store is not None
            with contextlib.suppress(ClientError):  # unknown: go on and try to claim
                if await self.ctx.store.run_exists(spec.name, occ):
                    log.debug("occ.taken", job=spec.name, occurrence=occ, position=position)
                    return
        t0 = time.monotonic()
        claim = await self._claim(entry, occ, instant, around)
        if claim is not None:
            self.ctx.stats.add("claim", time.monotonic() - t0)
            await self.runner.execute(entry, claim, instant)

    async def _claim(self, entry: JobEntry, occ: str, instant: datetime,
                     around: decide.Neighbours) -> Claim | None:
        key = (entry.spec.name, occ)
        deciding = self.runner.deciding
        deciding[key] = deciding.get(key, 0) + 1
        try:
            return await self._claim_loop(entry, occ, instant, around)
        finally:
            if deciding[key] > 1:
                deciding[key] -= 1
            else:
                del deciding[key]
            if self.ctx.store is not None:
                self.ctx.store.forget(entry.spec.name, occ)

    async def _claim_loop(self, entry: JobEntry, occ: str, instant: datetime,
                          around: decide.Neighbours) -> Claim | None:
        ctx = self.ctx
        spec = entry.spec
        exclusive = spec.concurrency != "allow"
        uncertain = False
        while True:
            store = ctx.store
            assert store is not None
            if ctx.stopping and not uncertain:
                return None  # no new claim while stopping (the backups will see none)
            if not uncertain and (spec.name not in ctx.jobs or ctx.is_suspended(spec.name)):
                # Suspended or deleted while it waited for the lock: not run. One already
                # due is recorded skipped, so every occurrence has a record.
                if spec.name in ctx.jobs and not decide.not_due(occ, ctx.clock.now()):
                    await self._skip(spec, occ, "job suspended while it waited for the lock")
                return None
            if ctx.deadline(spec, instant) < 0:
                await self._give_up(spec, occ, uncertain)
                return None
            later = (decide.later_claimed(spec.concurrency, ctx.held.get(spec.name), occ)
                     if not uncertain else None)
            if later is not None:
                # forbid and replace run occurrences in order: one whose later sibling
                # was claimed already (a slow backup, a waiter) is skipped, not started
                # after it.
                await self._skip(spec, occ, f"a later occurrence {later} was claimed first")
                return None
            newer = (decide.superseded(spec.concurrency, occ, around.next, ctx.clock.now())
                     if not uncertain else None)
            if newer is not None:
                await self._skip(spec, occ, decide.superseded_note(newer))
                return None
            entry.lock_freed.clear()
            recorded, unrecorded = decide.claim_order(spec.concurrency, occ, around)
            due_later = self._later_due(spec, unrecorded)
            try:
                sent = time.monotonic()
                claim = await store.claim(spec.name, occ, exclusive=exclusive,
                                          spec_revision=entry.revision, recorded=recorded,
                                          unrecorded=due_later or unrecorded)
                if claim is not None:
                    log.debug("occ.claimed", job=spec.name, occurrence=occ, token=claim.token)
                    claim.late = time.monotonic() - sent > LATE_ANSWER
                    return claim
                rec, kv = await store.get_run_kv(spec.name, occ)
                if rec is None and await self._spec_moved(entry, occ):
                    # Refused by the spec compare: the job was deleted or edited since
                    # this timer planned the occurrence. Nothing is recorded: the
                    # occurrence is the old spec's; the new spec's timer takes over.
                    log.info("occ.spec_changed", job=spec.name, occurrence=occ,
                             spec_revision=entry.revision)
                    return None
                overtaken = None
                for nxt in (due_later if rec is None else []):
                    if await store.run_exists(spec.name, nxt):
                        overtaken = nxt
                        break
                holder = await self._holder(spec.name) if rec is None else None
            except LeaseNotFoundError:
                # Our session lease is gone on the server: nothing can be claimed on it.
                # Declare the session lost now (the deadman re-registers) and retry on the
                # new one instead of waiting for the keepalive to notice.
                ctx.session_gone(store.me.lease)
                await asyncio.sleep(0.1)
                continue
            except ClientError as err:
                # The outcome is unknown (the store may be electing a leader): try again
                # while the deadline allows; a claim that did land is adopted below.
                uncertain = True
                log.warning("run.claim_retry", job=spec.name, occurrence=occ, error=str(err))
                await asyncio.sleep(0.25)
                continue
            if rec is not None and kv is not None:
                adopted = store.adopt(rec, kv, exclusive)
                # Another claim loop of ours for this occurrence (a timer of the job's
                # previous spec still firing it) may have made that claim: only a lone
                # loop adopts, or both would start it (seed 1252).
                if (adopted is not None and (spec.name, occ) not in ctx.running
                        and self.runner.deciding.get((spec.name, occ), 0) <= 1):
                    log.info("run.adopted", job=spec.name, occurrence=occ)
                    return adopted  # our earlier attempt landed; its answer was lost
                log.debug("occ.claimed_elsewhere", job=spec.name, occurrence=occ,
                          by=rec.worker, status=rec.status)
                return None  # another worker has this occurrence
            if overtaken is not None:
                # A later occurrence was claimed or settled first (this claim waited out
                # an outage, or a restart caught it up late): never started after it.
                await self._skip(spec, occ, decide.overtaken_note(overtaken))
                return None
            # The job is busy with an earlier run (forbid/replace).
            log.debug("occ.lock_busy", job=spec.name, occurrence=occ,
                      holder=holder.occurrence if holder else None,
                      holder_worker=holder.worker if holder else None)
            early = (instant - ctx.clock.now()).total_seconds()
            busy = decide.when_busy(spec.concurrency, early, holder is not None)
            if busy is Busy.WAIT_FOR_INSTANT:
                # Claimed ahead: the previous run may still end on its own before the
                # instant (for replace: only then is it killed).
                with contextlib.suppress(TimeoutError):
                    await within(entry.lock_freed.wait(), early)
                continue
            if busy is Busy.SKIP and holder is not None:
                # forbid skips: an occurrence due while the previous run is running is
                # recorded and never started later (a queue would start it late, and
                # several queued ones in any order).
                await self._skip(spec, occ, decide.busy_note(occ, holder.occurrence))
                return None
            if busy is Busy.KILL_AND_WAIT and holder is not None:
                later = decide.later_occurrence(spec.concurrency, holder.occurrence, occ)
                if later is not None:
                    # replace runs occurrences in order too: a waiter older than the
                    # run holding the lock is skipped, never kills the newer run.
                    await self._skip(spec, occ, decide.busy_note(occ, later))
                    return None
                with contextlib.suppress(ClientError):
                    await self.runner.request_kill(spec.name, occurrence=holder.occurrence,
                                                   reason=f"replaced by occurrence {occ}")
            with contextlib.suppress(TimeoutError):
                await within(entry.lock_freed.wait(),
                             timeout=max(0.05, min(ctx.deadline(spec, instant), 2.0)))

    def _later_due(self, spec: JobSpec, nxt: str | None) -> list[str]:
        """The occurrences a ``forbid``/``replace`` claim requires unrecorded: the next one
        ``nxt`` and, for a claim made after it fell due, those due after it up to now
        (at most ``LATER_MAX``). The next one alone did not keep order when a claim
        retried through slow calls while a restarted worker, whose first claim compares
        no previous occurrence, claimed one further on (seed 31)."""
        if nxt is None:
            return []
        start = occurrence_instant(nxt)
        now = self.ctx.clock.now()
        if start is None or start >= now:
            return [nxt]
        out = [nxt]
        for t in spec.timetable().iter_after(start):
            if t > now or len(out) >= LATER_MAX:
                break
            out.append(occurrence_id(t))
        return out

    async def _spec_moved(self, entry: JobEntry, occ: str) -> bool:
        """Whether the claim's spec compare (``claim.spec_guard``) refused it: the job's
        spec key is gone, or (a scheduled occurrence) no longer at ``entry.revision``."""
        if entry.revision <= 0:
            return False
        kv = await self.ctx.client.get_one(keys.job_key(entry.spec.name))
        if kv is None:
            return True
        return MANUAL_SUFFIX not in occ and kv.mod_revision != entry.revision

    async def _holder(self, job: str) -> LockHolder | None:
        kv = await self.ctx.client.get_one(keys.lock_key(job))
        if kv is None:
            return None
        try:
            return LockHolder.decode(kv.value)
        except (ValueError, TypeError):
            return None

    async def _skip(self, spec: JobSpec, occ: str, reason: str) -> None:
        """Record a ``forbid`` or ``replace`` occurrence as ``skipped`` (once: the record is
        create-only, so the backups that find the job busy too add nothing)."""
        store = self.ctx.store
        assert store is not None
        try:
            if await store.record_missed(spec.name, occ, status="skipped", note=reason,
                                         spec_revision=self.ctx.revision(spec)):
                log.info("run.skipped", job=spec.name, occurrence=occ, reason=reason)
        except ClientError as err:
            log.warning("run.skip_unrecorded", job=spec.name, occurrence=occ, error=str(err))

    async def _give_up(self, spec: JobSpec, occ: str, uncertain: bool) -> None:
        """The starting deadline passed. Record the occurrence as skipped; if one of our
        claims may have landed unheard, release it (so its lock does not block the job).

        Retried through store outages (for up to ``GIVE_UP_RETRY`` seconds): every worker
        that fired the occurrence gives up at about the same time, so if each dropped its
        write on an error, an outage at the deadline would leave the occurrence with
        neither a start nor a record."""
        delay = 0.25
        retry_until = time.monotonic() + GIVE_UP_RETRY
        while True:
            store = self.ctx.store  # a new session's store after a re-registration
            assert store is not None
            try:
                if uncertain:
                    rec, kv = await store.get_run_kv(spec.name, occ)
                    if rec is not None and kv is not None:
                        claim = store.adopt(rec, kv, spec.concurrency != "allow")
                        if claim is not None:
                            await self.runner.abandon(claim, "claimed too late to start")
                        return  # recorded already (by us or by whoever claimed it)
                if await store.record_missed(spec.name, occ,
                                             spec_revision=self.ctx.revision(spec)):
                    log.info("run.skipped", job=spec.name, occurrence=occ,
                             reason="not started within starting_deadline")
                return
            except ClientError as err:
                if self.ctx.stopping or time.monotonic() > retry_until:
                    log.warning("run.give_up_failed", job=spec.name, occurrence=occ,
                                error=str(err))
                    return
                log.debug("run.give_up_retry", job=spec.name, occurrence=occ, error=str(err))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # ------------------------------------------------------------------ triggers
    async def on_trigger_batch(self, batch: WatchBatch) -> None:
        """``raftcron jobs trigger``: fire a manual occurrence now."""
        for e in batch.events:
            if not e.is_put:
                continue
            found = keys.job_occurrence_from(e.kv.key, keys.TRIGGERS)
            if found is None or MANUAL_SUFFIX not in found[1]:
                report_bad(e.kv.key, e.kv.mod_revision,
                           "not /cron/trigger/<job>/<manual occurrence id>", "triggers")
                continue
            job, occ = found
            entry = self.ctx.jobs.get(job)
            instant = occurrence_instant(occ)
            if entry is None or instant is None:
                continue
            self.fire(entry, instant, occ)
