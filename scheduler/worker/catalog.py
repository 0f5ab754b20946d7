"""The catalog: what the jobs, suspensions and workers views hold, and the job timers they
start and stop (a job's timer runs while it has a valid spec and is not suspended)."""

from __future__ import annotations

import contextlib
import gc
from datetime import UTC, datetime

import structlog

from coord.client import ClientError, KeyValue, WatchBatch
from scheduler import keys
from scheduler.claim import RunRecord
from scheduler.decode import BadValue, decode_spec, report_bad, worker_tags
from scheduler.spec import JobSpec
from scheduler.suspension import Suspension
from scheduler.worker.firing import Firing
from scheduler.worker.reaping import Reaper
from scheduler.worker.restart import Restart, restart_point, resumed_from, started_from
from scheduler.worker.state import JobEntry, Shared

log = structlog.get_logger("scheduler.worker")


class Catalog:
    def __init__(self, ctx: Shared, firing: Firing, reaper: Reaper) -> None:
        self.ctx = ctx
        self.firing = firing
        self.reaper = reaper

    # ------------------------------------------------------------------ workers
    async def load_workers(self) -> int:
        ctx = self.ctx
        r = await ctx.client.get(keys.WORKERS, prefix=True)
        ctx.workers = {}
        ctx.worker_leases = {}
        for kv in r.kvs:
            found = _decode_worker(kv)
            if found is not None:
                ctx.workers[found[0]] = found[1]
                ctx.worker_leases[found[0]] = kv.lease
        ctx.workers_changed()
        ctx.workers_loaded = True
        self.reaper.leases_listed(set(ctx.worker_leases.values()))
        return r.revision

    async def on_worker_batch(self, batch: WatchBatch) -> None:
        ctx = self.ctx
        ctx.workers_changed()
        for e in batch.events:
            if e.is_put:
                found = _decode_worker(e.kv)
                if found is None:
                    continue
                ctx.workers[found[0]] = found[1]
                ctx.worker_leases[found[0]] = e.kv.lease
                continue
            name = keys.worker_from(e.kv.key)
            if name is not None:
                ctx.workers.pop(name, None)
                # Its session ended: check the locks it freed while still seen alive.
                self.reaper.lease_ended(ctx.worker_leases.pop(name, 0))

    # ------------------------------------------------------------------ jobs
    async def load_jobs(self) -> int:
        ctx = self.ctx
        # Suspensions first, so a suspended job's timer never starts (its own view follows).
        await self.load_suspensions()
        r = await ctx.client.get(keys.JOBS, prefix=True)
        found = {}
        for kv in r.kvs:
            spec = _decode_spec(kv)
            if spec is not None:
                found[spec.name] = (spec, kv.mod_revision)
        for name in list(ctx.jobs):
            if name not in found:
                self._remove_job(name)
        for spec, rev in found.values():
            await self._upsert_job(spec, rev, startup=True)
        if ctx.config.freeze_heap and not ctx.ready.is_set():
            gc.collect()
            gc.freeze()
        ctx.ready.set()
        return r.revision

    async def on_job_batch(self, batch: WatchBatch) -> None:
        for e in batch.events:
            name = keys.job_from(e.kv.key, keys.JOBS)
            if not e.is_put:
                if name is not None:
                    self._remove_job(name)
                continue
            spec = _decode_spec(e.kv)
            if spec is not None:
                await self._upsert_job(spec, e.kv.mod_revision, startup=False)
            elif name is not None:
                # An edit that made a job invalid stops it (it no longer has a valid spec).
                self._remove_job(name)

    def _remove_job(self, name: str) -> None:
        entry = self.ctx.jobs.pop(name, None)
        self.ctx.held.pop(name, None)
        if entry is not None and entry.task is not None:
            entry.task.cancel()
            log.info("job.removed", job=name)

    async def _upsert_job(self, spec: JobSpec, revision: int, startup: bool) -> None:
        ctx = self.ctx
        old = ctx.jobs.get(spec.name)
        if old is not None and old.revision == revision:
            return
        if old is not None and old.task is not None:
            old.task.cancel()
        entry = JobEntry(spec, revision, ctx.clock.now())
        ctx.jobs[spec.name] = entry
        if ctx.is_suspended(spec.name):
            log.info("job.suspended", job=spec.name)
            return
        if ctx.workers_loaded and not ctx.eligible(spec):
            ctx.warn_ineligible(spec)  # say it now, not only at its next fire instant
        since = entry.seen_at
        holes: tuple[datetime, ...] = ()
        if startup and old is None:
            restart = started_from(await self._catch_up_start(spec, revision), since)
            since = restart.since or since
            holes = restart.holes
        self.firing.start(entry, since, holes)

    async def _catch_up_start(self, spec: JobSpec, revision: int) -> Restart:
        """After a restart: where the job's timeline stopped, if its spec is unchanged since,
        and the unrecorded occurrences before that a dead worker left (``restart_point``)."""
        try:
            r = await self.ctx.client.get(keys.runs_prefix(spec.name), prefix=True)
        except ClientError:
            return Restart(None)
        records: list[RunRecord] = []
        for kv in r.kvs:  # keys sort by occurrence
            with contextlib.suppress(ValueError, TypeError):
                records.append(RunRecord.decode(kv.value))
        return restart_point(records, revision, spec.timetable(), self.ctx.clock.now(),
                             spec.starting_deadline)

    # ------------------------------------------------------------------ suspensions
    async def load_suspensions(self) -> int:
        ctx = self.ctx
        r = await ctx.client.get(keys.SUSPENSIONS, prefix=True)
        now = {keys.name_from(kv.key, keys.SUSPENSIONS): Suspension.decode(kv.value)
               for kv in r.kvs}
        changed = set(now) ^ set(ctx.suspended)
        old, ctx.suspended = ctx.suspended, now
        for name in set(old) - set(now):
            ctx.suspension_ended(name, old[name])
        for name in changed:
            self._suspension_changed(name, old.get(name))
        return r.revision

    async def on_suspension_batch(self, batch: WatchBatch) -> None:
        for e in batch.events:
            name = keys.name_from(e.kv.key, keys.SUSPENSIONS)
            ended = None
            if e.is_put:
                self.ctx.suspended[name] = Suspension.decode(e.kv.value)
            else:
                ended = self.ctx.suspended.pop(name, None)
                if ended is not None:
                    self.ctx.suspension_ended(name, ended)
            self._suspension_changed(name, ended)

    def _suspension_changed(self, name: str, ended: Suspension | None = None) -> None:
        """Stop or restart a job's timer after ``jobs suspend``/``resume`` (``ended``: the
        suspension that ended). A resumed job catches up from its last record, not from
        before the suspension (``resumed_from``): what it missed while suspended is not
        replayed (the resume records it ``skipped``, ``scheduler.suspension.resume``)."""
        ctx = self.ctx
        entry = ctx.jobs.get(name)
        if entry is None:
            return
        if ctx.is_suspended(name):
            if entry.task is not None:
                entry.task.cancel()
                entry.task = None
                why = ctx.suspended.get(name)
                log.info("job.suspended", job=name, by=why.by if why else "spec",
                         reason=why.reason if why else "")
        elif entry.task is None:
            entry.seen_at = ctx.clock.now()
            at = None
            if ended is not None:  # a hand-written value may hold any number
                with contextlib.suppress(ValueError, OverflowError, OSError):
                    at = datetime.fromtimestamp(ended.at, UTC)
            entry.task = ctx.spawn(self._resumed(entry, at), f"job:{name}")
            log.info("job.resumed", job=name)

    async def _resumed(self, entry: JobEntry, suspended_at: datetime | None) -> None:
        """A resumed job's timer: from its last record (``resumed_from``), then as usual."""
        restart = resumed_from(await self._catch_up_start(entry.spec, entry.revision),
                               entry.seen_at, suspended_at)
        assert restart.since is not None
        await self.firing.job_loop(entry, restart.since, restart.holes)


def _decode_worker(kv: KeyValue) -> tuple[str, dict[str, str]] | None:
    """(name, tags) of a ``/cron/workers/`` key, or None (logged once) if it is not one."""
    name = keys.worker_from(kv.key)
    try:
        if name is None:
            raise BadValue("not /cron/workers/<printable UTF-8 name>")
        return name, worker_tags(kv.value)
    except BadValue as err:
        report_bad(kv.key, kv.mod_revision, str(err), "workers")
        return None


def _decode_spec(kv: KeyValue) -> JobSpec | None:
    try:
        return decode_spec(kv.key, kv.value)
    except BadValue as err:
        report_bad(kv.key, kv.mod_revision, str(err), "jobs")
        return None
