"""The worker loop: watch jobs, fire on time, claim, run, record.

A worker talks to the store only through :mod:`coord.client`, so it runs against an
embedded coord or a real etcd alike. Its life:

1. **Session.** Grant a lease (``session_ttl``), keep it alive, and register
   ``/cron/workers/<name>`` on it. The lock of every run it starts lives on this lease.
2. **Views.** List + watch ``/cron/jobs/`` (the specs), ``/cron/workers/`` (live workers, for
   rendezvous ranking), ``/cron/lock/`` (lock deletions: a freed job, or a dead holder whose
   run must be marked lost) and ``/cron/killer/`` (kill requests). Watches resume from the
   last revision; after compaction the view is re-listed.
3. **Timers.** One task per job sleeps until the job's next fire instant (by this worker's
   clock, which may be skewed), then handles that occurrence in a task of its own.
4. **Occurrence.** Rank live eligible workers for (job, occurrence); the first claims
   ``claim_ahead`` before the instant, the k-th ``k * grace`` after it if nobody has. The
   claim txn (``scheduler.claim``) decides; a busy ``forbid`` job waits for its lock within
   ``starting_deadline``; ``replace`` asks the holder to kill its run first (at the instant).
   The winner spawns the process at the instant (a claim of a job suspended or deleted
   meanwhile is handed back), runs it with retries, and records the end (fenced) while
   releasing the lock.
5. **Deadman.** If the session may have expired (no renewal for a whole TTL), every running
   job is killed at once — before the store can expire the lock and let another worker take
   over — and the worker registers a new session.
6. **Stop.** SIGTERM: stop firing and claiming, let running jobs — and claims in flight or
   waiting for their instant, which start then — finish (up to ``stop_timeout``), record
   them, release locks and revoke the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from coord.aiotools import within
from coord.client import (
    ChannelFactory,
    Client,
    ClientError,
    CompactedError,
    Compare,
    KeepAlive,
    KeyValue,
    LeaseNotFoundError,
    TxnResult,
    WatchBatch,
    delete,
    prefix_end,
    txn_op,
)
from scheduler import keys
from scheduler.attempts import attempt_entry
from scheduler.claim import (
    ACTIVE,
    BATCH_MAX,
    Claim,
    ClaimStore,
    Identity,
    LockHolder,
    RunRecord,
)
from scheduler.clock import Clock, SystemClock
from scheduler.decode import BadValue, decode_spec, json_object, report_bad, worker_tags
from scheduler.eligibility import ineligible_reason
from scheduler.executor import JobProcess, RunRequest, RunResult
from scheduler.plan import (
    MANUAL_SUFFIX,
    catch_up,
    eligible_workers,
    occurrence_id,
    occurrence_instant,
    parse_occurrence_id,
)
from scheduler.plan import rank_workers as rank
from scheduler.spec import JobSpec
from scheduler.suspension import Suspension

log = structlog.get_logger("scheduler.worker")

VERSION = "0.1.0"
STOP_CANCEL_TIMEOUT = 5.0
"""Seconds a graceful stop waits for cancelled tasks to end before it goes on regardless."""
STOP_PROGRESS_EVERY = 5.0
"""Seconds between two ``worker.stop_waiting`` lines while a stop waits for running jobs."""
RUNNING_MARK_DELAY = 0.25
"""Seconds a run may take before its record is updated from `claimed` to `running`."""
PRUNE_EVERY = 10
"""Prune a job's run history on every PRUNE_EVERY-th finish (not on every one)."""
SWEEP_PAGE = 500
"""Run records read per request by the sweep."""
_ACTIVE_STATUS = re.compile(rb'"status"\s*:\s*"(?:claimed|running|retrying)"')
"""Matches the bytes of a run record whose status is active (decoded only then)."""
UNSURE_EVERY = 0.5
"""Seconds between the reads that settle lock deletions on a lease still seen alive."""
PRUNE_MARGIN = 120.0
"""Seconds past ``starting_deadline`` before a run record may be pruned: a skewed or slow
worker can still try to claim an occurrence that late, and the record is what stops it."""
GIVE_UP_RETRY = 60.0
"""Seconds past its starting deadline that a worker keeps trying to record an occurrence it
could not claim as ``missed`` (through a store outage)."""


@dataclass
class WorkerConfig:
    name: str
    endpoints: list[str]
    tags: dict[str, str] = field(default_factory=dict)
    session_ttl: int = 10
    grace: float = 0.3
    """Seconds between the rendezvous ranks: rank k claims after ``k * grace``."""
    claim_ahead: float = 0.25
    """Seconds before an occurrence's instant that the first-ranked worker sends its claim;
    the process still starts at the instant. The claim's round trip (a few ms, but ~90 ms at
    the 99th percentile on a loaded 2-core machine) is then off the fire-lag path. 0 claims
    at the instant."""
    log_dir: Path = field(default_factory=lambda: Path("raftcron-logs"))
    stop_timeout: float = 30.0
    sweep_interval: float = 15.0
    """Seconds between sweeps for runs whose claimant died unnoticed."""
    clock: Clock = field(default_factory=SystemClock)
    host: str = field(default_factory=socket.gethostname)
    compact_retention: float = 600.0
    """Seconds of store history to keep: the worker ranked first compacts the store, every
    ``retention / 10`` (at most every minute), to the revision it saw ``retention`` ago.
    Run records churn a revision or two per occurrence; without compaction the history
    grows forever (coord keeps it in memory and in every snapshot; etcd's database hits
    its space quota and turns read-only). 0 turns it off (a store shared with other
    applications that compact it themselves)."""
    freeze_heap: bool = False
    """Once the jobs are loaded, collect and ``gc.freeze()`` everything alive (the modules,
    the specs, the job timers): full collections then no longer walk that heap, each a
    pause of up to ~100 ms at 1,000 jobs that every due occurrence waited out. For a
    worker that owns its process (the CLI); tests running several in one process don't."""
    channels: ChannelFactory | None = None
    """How the client reaches an endpoint (``coord.client.ChannelFactory``): an agent's
    reaches its own member in the same process without a socket."""


@dataclass
class JobEntry:
    spec: JobSpec
    revision: int
    """mod_revision of the spec in the store: run records remember it, so a restart knows
    whether the schedule changed since the last run (no retroactive fires after an edit)."""
    seen_at: datetime
    task: asyncio.Task[None] | None = None
    lock_freed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Running:
    claim: Claim
    process: JobProcess | None = None
    kill_reason: str | None = None


class Worker:
    """One scheduler worker. ``await Worker(config).run(stop_event)``."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.clock = config.clock
        self.client = Client(config.endpoints, timeout=5.0, channels=config.channels)
        self.jobs: dict[str, JobEntry] = {}
        self.workers: dict[str, dict[str, str]] = {}
        self.running: dict[tuple[str, str], Running] = {}
        self.session: KeepAlive | None = None
        self.store: ClaimStore | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._finished: dict[str, int] = {}
        self._stopping = False
        self._worker_leases: dict[str, int] = {}
        """worker name → the lease of its ``/cron/workers/`` key (its session), from the view."""
        self._held: dict[str, bytes] = {}
        """job → the holder value of the latest lock PUT seen on the locks watch: a backup
        learns from it that the occurrence is taken, without reading the store."""
        self._unsure: dict[int, list[tuple[str, bytes, int, int]]] = {}
        """lease → lock deletions (job, holder, token, revision) on a lease the workers view
        still showed alive: a normal finish, unless the lease turns out to have expired."""
        self._unsure_wake = asyncio.Event()
        self.stats = StageStats()
        self._base_env = dict(os.environ)
        """The environment jobs inherit: the worker's, read once."""
        self._eligible_cache: dict[tuple[tuple[str, str], ...], list[str]] = {}
        """job tags → eligible workers; cleared whenever the workers view changes."""
        self.suspended: dict[str, Suspension] = {}
        """job → its runtime suspension (``/cron/suspend/``), from the view: not spec."""
        self._no_worker: set[str] = set()
        """Jobs warned about as runnable by no live worker (``job.no_eligible_worker``)."""
        self._workers_loaded = False
        self.ready = asyncio.Event()
        """Set once the worker is registered and has loaded the jobs (tests wait on it)."""

    # ------------------------------------------------------------------ lifecycle
    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker.starting", worker=self.config.name, endpoints=self.config.endpoints,
                 tags=self.config.tags)
        # The store may be unreachable for as long as it takes (peers still booting): a stop
        # must work meanwhile too.
        opening = asyncio.ensure_future(self._open_session())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({opening, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not opening.done():
            opening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await opening
            await self.client.close()
            log.info("worker.stopped", worker=self.config.name, registered=False)
            return
        opening.result()
        views = [
            self._spawn(self._view(keys.JOBS, self._load_jobs, self._on_job_batch), "jobs"),
            self._spawn(self._view(keys.WORKERS, self._load_workers, self._on_worker_batch),
                        "workers"),
            self._spawn(self._view(keys.LOCKS, self._noop_load, self._on_lock_batch,
                                   prev_kv=True), "locks"),
            self._spawn(self._view(keys.SUSPENSIONS, self._load_suspensions,
                                   self._on_suspension_batch), "suspensions"),
            self._spawn(self._view(keys.KILLERS, self._noop_load, self._on_killer_batch),
                        "killers"),
            self._spawn(self._view(keys.TRIGGERS, self._noop_load, self._on_trigger_batch),
                        "triggers"),
            self._spawn(self._deadman(), "deadman"),
            self._spawn(self._sweep(), "sweep"),
            self._spawn(self._confirm_unsure(), "confirm-lost"),
            self._spawn(self._compactor(), "compactor"),
        ]
        try:
            await stop.wait()
        finally:
            await self._shutdown(views)

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("worker.task_failed", task=task.get_name(), error=repr(task.exception()))

    async def _shutdown(self, views: list[asyncio.Task[Any]]) -> None:
        self._stopping = True
        log.info("worker.stopping", worker=self.config.name, running=len(self.running))
        for entry in self.jobs.values():
            if entry.task is not None:
                entry.task.cancel()
        for t in views:
            t.cancel()
        # Runs, and occurrences being claimed (a claim in flight may land; one sent ahead
        # starts at its instant): a stopping worker finishes what it has claimed.
        runs = [t for t in self._tasks if t.get_name().startswith(("run:", "occ:"))]
        if runs:
            pending = await self._wait_for_runs(runs)
            for r in self.running.values():
                if r.process is not None:
                    r.process.kill("worker stopping")
            if pending:  # killed just now: give their tasks a moment to record the end
                await asyncio.wait(pending, timeout=STOP_CANCEL_TIMEOUT / 2)
        leftover = list(self._tasks)
        for t in leftover:
            t.cancel()
        if leftover:
            # A stop takes at most --stop-timeout plus STOP_CANCEL_TIMEOUT, whatever the store
            # does (claims retrying against a store without quorum used to add 15 s).
            _, stuck = await asyncio.wait(leftover, timeout=STOP_CANCEL_TIMEOUT / 2)
            if stuck:  # a bug, but a stop must not hang on it: say which, and go on
                log.error("worker.stop_stuck_tasks", worker=self.config.name,
                          tasks=sorted(t.get_name() for t in stuck))
        if self.session is not None:
            with contextlib.suppress(TimeoutError):
                await within(self.session.stop(), STOP_CANCEL_TIMEOUT)
            with contextlib.suppress(ClientError):
                await self.client.revoke(self.session.lease_id)
        await self.client.close()
        log.info("worker.stopped", worker=self.config.name,
                 claim_txns=self.store.txns if self.store else 0,
                 batched_txns=self.store.batcher.batches if self.store else 0,
                 lag_ms=self.stats.summary())

    async def _wait_for_runs(self, runs: list[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
        """Wait up to ``stop_timeout`` for what this worker runs or has claimed, saying which
        jobs it waits for every few seconds; returns what is still pending."""
        deadline = time.monotonic() + self.config.stop_timeout
        pending = set(runs)
        while pending:
            left = deadline - time.monotonic()
            runs_now = sorted(f"{r.claim.job}@{r.claim.occurrence}"
                              for r in self.running.values())
            log.info("worker.stop_waiting", worker=self.config.name, runs=runs_now,
                     tasks=len(pending), timeout_left_s=round(max(left, 0.0), 1))
            if left <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=min(left, STOP_PROGRESS_EVERY))
        return pending

    # ------------------------------------------------------------------ session
    async def _open_session(self) -> None:
        while True:
            try:
                granted_at = time.monotonic()
                grant = await self.client.grant(self.config.session_ttl)
                info = {"host": self.config.host, "pid": os.getpid(), "tags": self.config.tags,
                        "version": VERSION, "started_at": time.time()}
                await self.client.put(keys.worker_key(self.config.name), json.dumps(info),
                                      lease=grant.id)
                break
            except ClientError as err:
                log.warning("worker.session_failed", error=str(err))
                await asyncio.sleep(1.0)
        self.session = self.client.keep_alive(grant.id, grant.ttl, granted_at)
        previous = self.store
        self.store = ClaimStore(self.client, Identity(self.config.name, grant.id,
                                                      host=self.config.host))
        self.store.batcher.on_sent = lambda seconds: self.stats.add("txn", seconds)
        if previous is not None:  # the claim count and the attempts span sessions
            self.store.txns = previous.txns
            self.store.attempted = previous.attempted
            self.store.batcher.batches = previous.batcher.batches
        log.info("worker.registered", worker=self.config.name, lease=f"{grant.id:x}",
                 ttl=grant.ttl)

    async def _deadman(self) -> None:
        """Kill every running job as soon as the session may have expired; re-register."""
        while True:
            assert self.session is not None
            session = self.session
            await session.lost.wait()
            victims = [r for r in self.running.values() if r.claim.record.worker]
            log.error("worker.session_lost", worker=self.config.name, killing=len(victims))
            for r in victims:
                r.kill_reason = "deadman: session lease lost"
                if r.process is not None:
                    r.process.kill("deadman: session lease lost")
            await session.stop()
            if self._stopping:
                return
            await self._open_session()

    # ------------------------------------------------------------------ views
    async def _view(self, prefix: str, load: Callable[[int], Awaitable[int]],
                    on_batch: Callable[[WatchBatch], Awaitable[None]],
                    prev_kv: bool = False) -> None:
        """List then watch ``prefix``, forever; re-list after compaction."""
        while True:
            try:
                rev = await load(0)
                async for batch in self.client.watch(prefix, prefix=True,
                                                     start_revision=rev + 1, prev_kv=prev_kv):
                    await on_batch(batch)
            except CompactedError:
                log.warning("worker.view_compacted", prefix=prefix)
            except ClientError as err:
                log.warning("worker.view_failed", prefix=prefix, error=str(err))
                await asyncio.sleep(0.5)
            except Exception as err:  # noqa: BLE001 - a bug here must not blind the worker
                # The decoders are total (scheduler.decode), so this is a bug; the view
                # says so and re-lists rather than dying.
                log.error("worker.view_error", prefix=prefix, error=repr(err)[:500])
                await asyncio.sleep(1.0)

    async def _noop_load(self, _: int) -> int:
        return (await self.client.get(keys.ROOT, count_only=True)).revision

    async def _load_workers(self, _: int) -> int:
        r = await self.client.get(keys.WORKERS, prefix=True)
        self.workers = {}
        self._worker_leases = {}
        for kv in r.kvs:
            found = _decode_worker(kv)
            if found is not None:
                self.workers[found[0]] = found[1]
                self._worker_leases[found[0]] = kv.lease
        self._eligible_cache.clear()
        self._workers_loaded = True
        live = set(self._worker_leases.values())
        for lease in [lease for lease in self._unsure if lease not in live]:
            self._resolve_unsure(lease, alive=False)
        return r.revision

    async def _on_worker_batch(self, batch: WatchBatch) -> None:
        self._eligible_cache.clear()
        for e in batch.events:
            if e.is_put:
                found = _decode_worker(e.kv)
                if found is None:
                    continue
                self.workers[found[0]] = found[1]
                self._worker_leases[found[0]] = e.kv.lease
                continue
            name = keys.worker_from(e.kv.key)
            if name is not None:
                self.workers.pop(name, None)
                lease = self._worker_leases.pop(name, 0)
                if lease in self._unsure:  # its session ended: check its freed locks now
                    self._resolve_unsure(lease, alive=False)

    async def _load_jobs(self, _: int) -> int:
        # Suspensions first, so a suspended job's timer never starts (its own view follows).
        await self._load_suspensions(0)
        r = await self.client.get(keys.JOBS, prefix=True)
        found = {}
        for kv in r.kvs:
            spec = _decode_spec(kv)
            if spec is not None:
                found[spec.name] = (spec, kv.mod_revision)
        for name in list(self.jobs):
            if name not in found:
                self._remove_job(name)
        for spec, rev in found.values():
            await self._upsert_job(spec, rev, startup=True)
        if self.config.freeze_heap and not self.ready.is_set():
            gc.collect()
            gc.freeze()
        self.ready.set()
        return r.revision

    async def _on_job_batch(self, batch: WatchBatch) -> None:
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
        entry = self.jobs.pop(name, None)
        self._held.pop(name, None)
        if entry is not None and entry.task is not None:
            entry.task.cancel()
            log.info("job.removed", job=name)

    async def _upsert_job(self, spec: JobSpec, revision: int, startup: bool) -> None:
        old = self.jobs.get(spec.name)
        if old is not None and old.revision == revision:
            return
        if old is not None and old.task is not None:
            old.task.cancel()
        entry = JobEntry(spec, revision, self.clock.now())
        self.jobs[spec.name] = entry
        if self._is_suspended(spec.name):
            log.info("job.suspended", job=spec.name)
            return
        if self._workers_loaded and not self._eligible(spec):
            self._warn_ineligible(spec)  # say it now, not only at its next fire instant
        since = entry.seen_at
        if startup and old is None:
            since = await self._catch_up_start(spec, revision) or since
        entry.task = self._spawn(self._job_loop(entry, since), f"job:{spec.name}")

    def _is_suspended(self, name: str) -> bool:
        entry = self.jobs.get(name)
        return name in self.suspended or (entry is not None and entry.spec.suspend)

    async def _load_suspensions(self, _: int) -> int:
        r = await self.client.get(keys.SUSPENSIONS, prefix=True)
        now = {keys.name_from(kv.key, keys.SUSPENSIONS): Suspension.decode(kv.value)
               for kv in r.kvs}
        changed = set(now) ^ set(self.suspended)
        self.suspended = now
        for name in changed:
            self._suspension_changed(name)
        return r.revision

    async def _on_suspension_batch(self, batch: WatchBatch) -> None:
        for e in batch.events:
            name = keys.name_from(e.kv.key, keys.SUSPENSIONS)
            if e.is_put:
                self.suspended[name] = Suspension.decode(e.kv.value)
            else:
                self.suspended.pop(name, None)
            self._suspension_changed(name)

    def _suspension_changed(self, name: str) -> None:
        """Stop or restart a job's timer after ``jobs suspend``/``resume``. A resumed job
        fires from now on: what it missed while suspended is not replayed."""
        entry = self.jobs.get(name)
        if entry is None:
            return
        if self._is_suspended(name):
            if entry.task is not None:
                entry.task.cancel()
                entry.task = None
                why = self.suspended.get(name)
                log.info("job.suspended", job=name, by=why.by if why else "spec",
                         reason=why.reason if why else "")
        elif entry.task is None:
            entry.seen_at = self.clock.now()
            entry.task = self._spawn(self._job_loop(entry, entry.seen_at), f"job:{name}")
            log.info("job.resumed", job=name)

    async def _catch_up_start(self, spec: JobSpec, revision: int) -> datetime | None:
        """After a restart: where the job's timeline stopped, if its spec is unchanged since."""
        assert self.store is not None
        try:
            r = await self.client.get(keys.runs_prefix(spec.name), prefix=True)
        except ClientError:
            return None
        last: RunRecord | None = None
        for kv in r.kvs:  # keys sort by occurrence
            with contextlib.suppress(ValueError, TypeError):
                rec = RunRecord.decode(kv.value)
                # Records without a spec revision (missed records written before they
                # carried it) say nothing about the spec: skip them.
                if MANUAL_SUFFIX not in rec.occurrence and rec.spec_revision:
                    last = rec
        if last is None or last.spec_revision != revision:
            return None
        return parse_occurrence_id(last.occurrence)

    # ------------------------------------------------------------------ timers
    async def _job_loop(self, entry: JobEntry, since: datetime) -> None:
        spec = entry.spec
        timetable = spec.timetable()
        now = self.clock.now()
        if since < now - timedelta(seconds=1):
            plan = catch_up(timetable, since=since, now=now,
                            starting_deadline=spec.starting_deadline)
            # Occurrences past their starting deadline are recorded missed now; younger
            # ones may still be claimed by live workers (this worker restarted while others
            # kept going), so they are recorded once their deadline has passed, and only
            # if nobody claimed them meanwhile (the record is create-only). Before, they
            # were never recorded and vanished from the history.
            horizon = now - timedelta(seconds=spec.starting_deadline)
            for instant in plan.missed:
                if instant < horizon:
                    await self._record_missed(spec, instant)
                else:
                    left = (instant - horizon).total_seconds() + 1.0
                    self._spawn(self._record_missed_later(spec, instant, left),
                                f"missed:{spec.name}")
            if plan.run is not None:
                self._fire(entry, plan.run)
        cursor = max(since, now)
        ahead = self.config.claim_ahead
        while True:
            nxt = timetable.next_after(cursor)
            if nxt is None:
                return
            delay = (nxt - self.clock.now()).total_seconds() - ahead
            if delay > 0:
                await asyncio.sleep(delay)
            cursor = nxt
            self._fire(entry, nxt, ahead=ahead)

    async def _record_missed_later(self, spec: JobSpec, instant: datetime,
                                   delay: float) -> None:
        await asyncio.sleep(delay)
        current = self.jobs.get(spec.name)
        if not self._stopping and current is not None and current.spec == spec:
            await self._record_missed(spec, instant)

    def _revision(self, spec: JobSpec) -> int:
        """The store revision of ``spec`` if it is the job's current one (records remember
        it: a restart resumes the timeline only for an unchanged spec), else 0."""
        entry = self.jobs.get(spec.name)
        return entry.revision if entry is not None and entry.spec is spec else 0

    async def _record_missed(self, spec: JobSpec, instant: datetime) -> None:
        assert self.store is not None
        occ = occurrence_id(instant)
        try:
            if await self.store.record_missed(spec.name, occ,
                                              spec_revision=self._revision(spec)):
                log.info("run.missed", job=spec.name, occurrence=occ)
        except ClientError as err:
            # Every worker that restarts records these; one that fails here says so rather
            # than dropping it silently (the occurrence was not run either way).
            log.warning("run.missed_unrecorded", job=spec.name, occurrence=occ, error=str(err))

    # ------------------------------------------------------------------ occurrences
    def _eligible(self, spec: JobSpec) -> list[str]:
        key = tuple(sorted(spec.tags.items()))
        found = self._eligible_cache.get(key)
        if found is None:
            live = dict(self.workers)
            live.setdefault(self.config.name, self.config.tags)
            found = self._eligible_cache[key] = eligible_workers(spec.tags, live)
        return found

    def _warn_ineligible(self, spec: JobSpec) -> None:
        """Warn (once, until it becomes runnable again) that no live worker may run the job."""
        if spec.name in self._no_worker:
            return
        live = dict(self.workers)
        live.setdefault(self.config.name, self.config.tags)
        reason = ineligible_reason(spec.tags, live)
        if reason is not None:
            self._no_worker.add(spec.name)
            log.warning("job.no_eligible_worker", job=spec.name, reason=reason)

    def _deadline(self, spec: JobSpec, instant: datetime) -> float:
        """Seconds left (by this worker's clock) to start this occurrence."""
        late = (self.clock.now() - instant).total_seconds()
        return spec.starting_deadline - late

    def _fire(self, entry: JobEntry, instant: datetime, occ: str | None = None,
              ahead: float = 0.0) -> None:
        """One fire instant of a job (called ``ahead`` seconds before it by the timers):
        the first-ranked worker claims at once (in a task of its own) and starts the process
        at the instant; the k-th looks again ``k * grace`` after the instant (a timer) and
        starts a task only if the locks watch has not shown the occurrence claimed by then."""
        spec = entry.spec
        occ = occ or occurrence_id(instant)
        self.stats.add("wake", (self.clock.now() - instant).total_seconds() + ahead)
        eligible = self._eligible(spec)
        if not eligible:
            self._warn_ineligible(spec)
        elif self._no_worker:
            self._no_worker.discard(spec.name)
        if self.config.name not in eligible:
            return
        position = rank(spec.name, occ, eligible).index(self.config.name)
        if position == 0:
            self._spawn(self._occurrence(entry, instant, occ, 0), f"occ:{spec.name}")
        else:
            early = max(0.0, (instant - self.clock.now()).total_seconds())
            asyncio.get_running_loop().call_later(early + position * self.config.grace,
                                                  self._backup_due, entry, instant, occ,
                                                  position)

    def _backup_due(self, entry: JobEntry, instant: datetime, occ: str, position: int) -> None:
        # A spec edited meanwhile does not cancel an occurrence already due (as the first
        # worker's claim is not cancelled either); a deleted or suspended job does.
        current = self.jobs.get(entry.spec.name)
        if (self._stopping or current is None or self._is_suspended(entry.spec.name)
                or self._taken(entry.spec.name, occ)):
            return
        self._spawn(self._occurrence(entry, instant, occ, position), f"occ:{entry.spec.name}")

    async def _occurrence(self, entry: JobEntry, instant: datetime, occ: str,
                          position: int) -> None:
        spec = entry.spec
        if position > 0:
            assert self.store is not None
            with contextlib.suppress(ClientError):  # unknown: go on and try to claim
                if await self.store.run_exists(spec.name, occ):
                    log.debug("occ.taken", job=spec.name, occurrence=occ, position=position)
                    return
        t0 = time.monotonic()
        claim = await self._claim(entry, occ, instant)
        if claim is not None:
            self.stats.add("claim", time.monotonic() - t0)
            await self._execute(entry, claim, instant)

    def _later_claimed(self, spec: JobSpec, occ: str) -> str | None:
        """For a ``forbid`` job: the occurrence the locks watch last showed claimed, if it
        is later than ``occ`` (best effort: the watch may lag, the claim txn decides)."""
        raw = self._held.get(spec.name)
        if spec.concurrency != "forbid" or raw is None:
            return None
        try:
            held = LockHolder.decode(raw).occurrence
        except ValueError:
            return None
        mine, theirs = occurrence_instant(occ), occurrence_instant(held)
        return held if mine is not None and theirs is not None and theirs > mine else None

    def _taken(self, job: str, occ: str) -> bool:
        """True if the locks watch showed a claim of (job, occ): a backup need not read the
        store to know it is too late (the claim txn would refuse it anyway)."""
        raw = self._held.get(job)
        if raw is None:
            return False
        try:
            return LockHolder.decode(raw).occurrence == occ
        except (ValueError, TypeError):
            return False

    async def _claim(self, entry: JobEntry, occ: str, instant: datetime) -> Claim | None:
        try:
            return await self._claim_loop(entry, occ, instant)
        finally:
            if self.store is not None:
                self.store.forget(entry.spec.name, occ)

    async def _claim_loop(self, entry: JobEntry, occ: str, instant: datetime) -> Claim | None:
        spec = entry.spec
        exclusive = spec.concurrency != "allow"
        uncertain = False
        while True:
            store = self.store
            assert store is not None
            if self._stopping and not uncertain:
                return None  # no new claim while stopping (the backups will see none)
            if self._deadline(spec, instant) < 0:
                await self._give_up(spec, occ, uncertain)
                return None
            later = self._later_claimed(spec, occ) if not uncertain else None
            if later is not None:
                # forbid runs occurrences in order: one whose later sibling was claimed
                # already (a slow backup) is skipped, not started after it.
                await self._skip(spec, occ, f"a later occurrence {later} was claimed first")
                return None
            entry.lock_freed.clear()
            try:
                claim = await store.claim(spec.name, occ, exclusive=exclusive,
                                          spec_revision=entry.revision)
                if claim is not None:
                    log.debug("occ.claimed", job=spec.name, occurrence=occ, token=claim.token)
                    return claim
                rec, kv = await store.get_run_kv(spec.name, occ)
                holder = await self._holder(spec.name) if rec is None else None
            except LeaseNotFoundError:
                # Our session lease is gone on the server: nothing can be claimed on it.
                # Declare the session lost now (the deadman re-registers) and retry on the
                # new one instead of waiting for the keepalive to notice.
                self._session_gone(store.me.lease)
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
                if adopted is not None and (spec.name, occ) not in self.running:
                    log.info("run.adopted", job=spec.name, occurrence=occ)
                    return adopted  # our earlier attempt landed; its answer was lost
                log.debug("occ.claimed_elsewhere", job=spec.name, occurrence=occ,
                          by=rec.worker, status=rec.status)
                return None  # another worker has this occurrence
            # The job is busy with an earlier run (forbid/replace).
            log.debug("occ.lock_busy", job=spec.name, occurrence=occ,
                      holder=holder.occurrence if holder else None,
                      holder_worker=holder.worker if holder else None)
            early = (instant - self.clock.now()).total_seconds()
            if spec.concurrency == "forbid" and early > 0:
                # Claimed ahead: the previous run may still end before the instant.
                with contextlib.suppress(TimeoutError):
                    await within(entry.lock_freed.wait(), early)
                continue
            if spec.concurrency == "forbid" and holder is not None:
                # forbid skips: an occurrence due while the previous run is running is
                # recorded and never started later (a queue would start it late, and
                # several queued ones in any order).
                await self._skip(spec, occ, f"previous run {holder.occurrence} still running")
                return None
            if spec.concurrency == "replace" and holder is not None and early > 0:
                # Claimed ahead: the run it replaces may still end on its own before the
                # instant; only then is it killed.
                with contextlib.suppress(TimeoutError):
                    await within(entry.lock_freed.wait(), early)
                continue
            if spec.concurrency == "replace" and holder is not None:
                with contextlib.suppress(ClientError):
                    await self._request_kill(spec.name, occurrence=holder.occurrence,
                                             reason=f"replaced by occurrence {occ}")
            with contextlib.suppress(TimeoutError):
                await within(entry.lock_freed.wait(),
                             timeout=max(0.05, min(self._deadline(spec, instant), 2.0)))

    async def _holder(self, job: str) -> LockHolder | None:
        kv = await self.client.get_one(keys.lock_key(job))
        if kv is None:
            return None
        try:
            return LockHolder.decode(kv.value)
        except (ValueError, TypeError):
            return None

    async def _skip(self, spec: JobSpec, occ: str, reason: str) -> None:
        """Record a ``forbid`` occurrence as ``skipped`` (once: the record is create-only,
        so the backups that find the job busy too add nothing)."""
        store = self.store
        assert store is not None
        try:
            if await store.record_missed(spec.name, occ, status="skipped", note=reason,
                                         spec_revision=self._revision(spec)):
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
            store = self.store  # a new session's store after a re-registration
            assert store is not None
            try:
                if uncertain:
                    rec, kv = await store.get_run_kv(spec.name, occ)
                    if rec is not None and kv is not None:
                        claim = store.adopt(rec, kv, spec.concurrency != "allow")
                        if claim is not None:
                            await self._abandon(claim, "claimed too late to start")
                        return  # recorded already (by us or by whoever claimed it)
                if await store.record_missed(spec.name, occ,
                                             spec_revision=self._revision(spec)):
                    log.info("run.skipped", job=spec.name, occurrence=occ,
                             reason="not started within starting_deadline")
                return
            except ClientError as err:
                if self._stopping or time.monotonic() > retry_until:
                    log.warning("run.give_up_failed", job=spec.name, occurrence=occ,
                                error=str(err))
                    return
                log.debug("run.give_up_retry", job=spec.name, occurrence=occ, error=str(err))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _abandon(self, claim: Claim, reason: str) -> None:
        """Never start this claim: record why (fenced) and free its lock (if still ours)."""
        store = self.store
        assert store is not None
        log.warning("run.abandoned", job=claim.job, occurrence=claim.occurrence, reason=reason)
        finished = False
        with contextlib.suppress(ClientError):
            finished = await store.finish(claim, status="missed", finished_at=time.time(),
                                          note=reason)
        if not finished:
            await self._release_settled(claim)

    async def _release_settled(self, claim: Claim) -> None:
        """Free the lock of a run whose final write did not land — only if its record is no
        longer active for this run (someone marked it lost, or it is gone). A lock freed
        under an active record would read as a normal finish to the other workers; left
        alone, it goes with the session lease, and the lost-run detection sees that."""
        store = self.store
        assert store is not None
        with contextlib.suppress(ClientError):
            rec, _ = await store.get_run_kv(claim.job, claim.occurrence)
            if rec is not None and rec.run_id == claim.record.run_id and rec.status in ACTIVE:
                log.warning("lock.kept", job=claim.job, occurrence=claim.occurrence,
                            reason="its run record is still active")
                return
            await store.release_lock(claim)

    async def _execute(self, entry: JobEntry, claim: Claim,
                       instant: datetime | None = None) -> None:
        spec = entry.spec
        key = (claim.job, claim.occurrence)
        run = Running(claim)
        self.running[key] = run
        task = asyncio.current_task()
        if task is not None:
            task.set_name(f"run:{claim.job}:{claim.occurrence}")
            self._tasks.add(task)
        try:
            await self._attempts(spec, run, instant)
        except asyncio.CancelledError:
            # Nobody will wait for the process any more: it must not outlive its run.
            if run.process is not None:
                run.process.kill("run cancelled")
            raise
        except Exception as err:  # a bug must not leave the job locked
            log.exception("run.crashed", job=claim.job, occurrence=claim.occurrence)
            if run.process is not None:
                run.process.kill("worker error")
            assert self.store is not None
            finished = False
            with contextlib.suppress(ClientError):
                finished = await self.store.finish(claim, status="failed",
                                                   finished_at=time.time(),
                                                   note=f"worker error: {err!r}")
            if not finished:
                await self._release_settled(claim)
        finally:
            self.running.pop(key, None)

    async def _await_instant(self, run: Running, instant: datetime) -> bool:
        """A claim sent ahead of its instant (``claim_ahead``) starts at the instant, never
        before. False if it was handed back instead, because the job was suspended or
        deleted while it waited. A worker that begins to stop meanwhile still starts it at
        the instant (its stop waits for its runs); a kill request or a lost session while
        waiting is handled by the start checks that follow, as for any claim."""
        wait = (instant - self.clock.now()).total_seconds()
        if wait <= 0:
            return True
        while wait > 0:  # a timer may fire a hair early: never start before the instant
            await asyncio.sleep(wait)
            wait = (instant - self.clock.now()).total_seconds()
        claim = run.claim
        current = self.jobs.get(claim.job)
        if current is not None and not self._is_suspended(claim.job):
            return True
        handed = False
        assert self.store is not None
        with contextlib.suppress(ClientError):
            handed = await self.store.hand_back(claim)
        # Not handed back: the record moved on (declared lost) or the store did not answer;
        # the lock then goes with the session and the lost-run detection records the run.
        log.info("run.handed_back", job=claim.job, occurrence=claim.occurrence,
                 reason="job suspended or deleted", done=handed)
        return False

    async def _attempts(self, spec: JobSpec, run: Running, instant: datetime | None) -> None:
        store = self.store
        assert store is not None
        claim = run.claim
        bound = log.bind(job=claim.job, occurrence=claim.occurrence, token=claim.token,
                         run_id=claim.record.run_id)
        attempt = claim.record.attempt
        result: RunResult | None = None
        if instant is not None and not await self._await_instant(run, instant):
            return
        while True:
            if not self._session_is(claim.lease) or run.kill_reason is not None:
                # The session this claim lives on is gone (deadman) or the run was killed
                # while waiting: starting now could overlap a run elsewhere.
                status = "killed" if run.kill_reason and not run.kill_reason.startswith(
                    "deadman") else "lost"
                if not await self._write(claim, store.finish, status=status,
                                         finished_at=time.time(),
                                         note=run.kill_reason or "session lost before the start"):
                    await self._release_settled(claim)
                bound.warning("run.not_started", reason=run.kill_reason or "session lost")
                return
            # With `on_lost: rerun` the record must say `running` *before* the process
            # exists: a lost run is re-run only if it provably never started. Otherwise the
            # mark is written right after the spawn, keeping a store round trip off the
            # fire-lag path (a run lost in between is recorded lost, never re-run).
            mark_first = spec.on_lost == "rerun"
            if mark_first and not await self._write(claim, store.update, status="running",
                                                    started_at=time.time(), attempt=attempt):
                bound.warning("run.fenced_out", stage="start")
                await self._release_settled(claim)
                return
            if mark_first and (run.kill_reason is not None
                               or not self._session_is(claim.lease)):
                continue  # killed (or the session lost) while the mark was written
            request = RunRequest.from_spec(spec, occurrence=claim.occurrence,
                                           run_id=claim.record.run_id,
                                           fencing_token=claim.token, attempt=attempt)
            # One log file per run, so overlapping runs (concurrency: allow) never mix.
            log_path = self.config.log_dir / claim.job / f"{claim.occurrence}.{attempt}.log"
            proc = JobProcess(request, log_path=log_path, clock=self.clock,
                              base_env=self._base_env)
            run.process = proc
            t_spawn = time.monotonic()
            try:
                await proc.start()
            except Exception as err:  # noqa: BLE001 - any spawn failure ends this run cleanly
                # (ExecutorError for a bad command or workdir; anything else is a bug, but
                # must still release the lock rather than leave the job blocked).
                bound.error("run.spawn_failed", error=str(err))
                now = time.time()
                tried = attempt_entry(attempt, started_at=now, finished_at=now, exit_code=None,
                                      signal=None, status="failed", log=None, note=str(err))
                if not await self._write(claim, store.finish, status="failed",
                                         finished_at=now, note=str(err), attempt=attempt,
                                         attempts=[*claim.record.attempts, tried]):
                    await self._release_settled(claim)
                return
            self.stats.add("spawn", time.monotonic() - t_spawn)
            if instant is not None and attempt == claim.record.attempt:
                self.stats.add("fire", (self.clock.now() - instant).total_seconds())
            bound.info("run.started", attempt=attempt, pid=proc.pid, host=self.config.host,
                       log=str(log_path))
            started_at = time.time()
            result = None
            if not mark_first:
                # Most runs are short: mark `running` only if the process is still going
                # after RUNNING_MARK_DELAY, so a quick run costs two writes (claim, finish).
                with contextlib.suppress(TimeoutError):
                    result = await within(proc.wait(), RUNNING_MARK_DELAY)
                if result is None and not await self._write(
                        claim, store.update, status="running", started_at=started_at,
                        attempt=attempt):
                    # Someone declared this run lost meanwhile: it is not ours any more.
                    proc.kill("fenced out: the run was declared lost")
                    run.kill_reason = "fenced out"
            if result is None:
                result = await proc.wait()
            status = _status(result, run.kill_reason)
            # One line per run end, at a level that says how it went (README, "Logs").
            end_level = {"succeeded": "info", "lost": "error"}.get(status, "warning")
            getattr(bound, end_level)("run.finished", attempt=attempt, status=status,
                                      exit_code=result.exit_code, signal=result.signal,
                                      duration=round(result.duration, 3),
                                      note=run.kill_reason or result.kill_reason or "")
            retry = (status in ("failed", "timeout") and attempt <= spec.retries
                     and run.kill_reason is None and not self._stopping)
            finished_at = time.time()
            note = run.kill_reason or result.kill_reason or ""
            # Every attempt is kept (start, end, exit, status, log), not only the last one.
            tried = attempt_entry(attempt, started_at=started_at, finished_at=finished_at,
                                  exit_code=result.exit_code, signal=result.signal,
                                  status=status, log=log_path, note=note)
            fields = dict(exit_code=result.exit_code, signal=result.signal,
                          output_tail=result.output_tail, finished_at=finished_at,
                          started_at=started_at, note=note, attempt=attempt,
                          attempts=[*claim.record.attempts, tried])
            if not retry:
                if await self._write(claim, store.finish, status=status, **fields):
                    self._finished[spec.name] = self._finished.get(spec.name, 0) + 1
                    if self._finished[spec.name] % PRUNE_EVERY == 1:
                        await self._prune(spec)
                else:
                    bound.warning("run.fenced_out", stage="finish")
                    await self._release_settled(claim)
                return
            delay = spec.retry_delay(attempt)
            if not await self._write(claim, store.update, status="retrying", **fields):
                bound.warning("run.fenced_out", stage="retry")
                await self._release_settled(claim)
                return
            bound.info("run.retrying", attempt=attempt, delay=delay)
            await asyncio.sleep(delay)
            attempt += 1

    def _session_gone(self, lease: int) -> None:
        """The store says ``lease`` does not exist: if it is our session, it is lost."""
        if self.session is not None and self.session.lease_id == lease:
            log.warning("worker.session_gone", lease=f"{lease:x}")
            self.session.lost.set()

    def _session_is(self, lease: int) -> bool:
        """True while ``lease`` is this worker's live, unexpired session."""
        return (self.session is not None and self.session.lease_id == lease
                and not self.session.lost.is_set())

    async def _write(self, claim: Claim, op: Callable[..., Awaitable[bool]],
                     **changes: Any) -> bool:
        """A fenced write of the run record, retried through store outages.

        False means the run is no longer this worker's (someone marked it lost, or the
        session is gone). When a write's outcome is unknown, the record is read back: if it
        already holds this write, that counts as done; if it is untouched, the write is
        retried; anything else means another writer moved it on.
        """
        store = self.store
        assert store is not None
        delay = 0.1
        while True:
            try:
                return await op(claim, **changes)
            except ClientError as err:
                log.warning("run.write_retry", job=claim.job, occurrence=claim.occurrence,
                            error=str(err))
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                if not self._session_is(claim.lease):
                    return False
                try:
                    rec, kv = await store.get_run_kv(claim.job, claim.occurrence)
                    break
                except ClientError:
                    continue
            if rec is None or kv is None:
                return False
            if kv.mod_revision == claim.revision:
                continue  # the write did not land: try it again
            landed = rec.run_id == claim.record.run_id and all(
                getattr(rec, k) == v for k, v in changes.items() if hasattr(rec, k))
            if landed:
                claim.revision = kv.mod_revision
            return landed

    async def _prune(self, spec: JobSpec) -> None:
        """Keep ``history_limit`` records, never deleting one young enough to be claimed
        again, nor an active one; each delete is guarded by the record's mod revision, and
        they go to the store as one txn."""
        horizon = self.clock.now() - timedelta(seconds=spec.starting_deadline + PRUNE_MARGIN)
        prefix = keys.runs_prefix(spec.name)
        assert self.store is not None
        try:
            # One read: ``count`` is the whole history, the page its oldest records.
            r = await self.client.get(prefix, prefix=True, limit=PRUNE_EVERY * 4)
            excess = r.count - spec.history_limit
            if excess <= 0:
                return
            doomed: list[tuple[str, KeyValue]] = []
            for kv in r.kvs[:min(excess, BATCH_MAX)]:
                occ = keys.name_from(kv.key, prefix)
                instant = occurrence_instant(occ) if keys.valid_occurrence(occ) else None
                if instant is None:
                    continue  # not ours to judge
                if instant >= horizon:
                    break
                if _ACTIVE_STATUS.search(kv.value) is not None:
                    continue
                doomed.append((occ, kv))
            if not doomed:
                return
            res = await self.store.batcher.submit(
                spec.name, [], [txn_op([Compare.mod(kv.key) == kv.mod_revision],
                                       [delete(kv.key)], []) for _, kv in doomed])
            for (occ, _), sub in zip(doomed, res.responses, strict=True):
                if isinstance(sub, TxnResult) and sub.succeeded:
                    for old in (self.config.log_dir / spec.name).glob(f"{occ}.*.log"):
                        old.unlink(missing_ok=True)
        except ClientError as err:
            log.debug("run.prune_failed", job=spec.name, error=str(err))

    # ------------------------------------------------------------------ locks and kills
    async def _on_lock_batch(self, batch: WatchBatch) -> None:
        for e in batch.events:
            job = keys.job_from(e.kv.key, keys.LOCKS)
            if job is None:
                report_bad(e.kv.key, e.kv.mod_revision, "not /cron/lock/<valid job name>",
                           "locks")
                continue
            if e.is_put:
                self._held[job] = e.kv.value
                continue
            entry = self.jobs.get(job)
            if entry is not None:
                entry.lock_freed.set()
            prev = e.prev_kv
            if prev is not None:
                self._lock_deleted(job, prev.value, prev.create_revision, prev.lease,
                                   e.kv.mod_revision)

    def _lock_deleted(self, job: str, raw_holder: bytes, token: int, lease: int,
                      revision: int) -> None:
        """A lock (created at ``token`` on ``lease``) was deleted at ``revision``: a run
        finished or was released, or its holder's session expired and the run is lost.

        Only the first live worker in rendezvous order for the run looks further. A lease
        expiry deletes every key on the lease in one revision, the holder's
        ``/cron/workers/`` key included; so if that key is still there at a revision at or
        after the deletion, the lease was alive and the deletion was the holder's own (a
        normal finish): no store round trip. While the workers view still shows the lease,
        the deletion is parked (``_unsure``) until the view drops the lease (→ check now) or
        one read of ``/cron/workers/`` at a later revision settles it (``_confirm_unsure``).
        A lease the view no longer shows is checked at once. The sweep is the safety net.
        """
        # A deletion on our own session's lease is ours (a finish): _first_for leaves the
        # holder's session out of the ranking, so this worker is never the one to check it.
        if not self._responsible_for_lost(job, raw_holder, lease):
            return
        if lease and lease in self._worker_leases.values():
            self._unsure.setdefault(lease, []).append((job, raw_holder, token, revision))
            self._unsure_wake.set()
            return
        self._spawn(self._check_lost(job, raw_holder, token), f"lost:{job}")

    def _responsible_for_lost(self, job: str, raw_holder: bytes, lease: int) -> bool:
        try:
            holder = LockHolder.decode(raw_holder)
        except (ValueError, TypeError):
            return False
        entry = self.jobs.get(job)
        if entry is None or (job, holder.occurrence) in self.running:
            return False
        return self._first_for(entry.spec, holder.occurrence, holder.worker, lease)

    def _first_for(self, spec: JobSpec, key: str, holder: str, lease: int) -> bool:
        """True if this worker is the one to act on a possibly lost run of ``spec``: the
        first in rendezvous order for ``key`` among the workers that could re-run the job
        (among all live workers if none is left), leaving out the holder's session — the
        one presumed dead — but not a new session of a holder that restarted under the
        same name."""
        me = self.config.name

        def same_session(w: str) -> bool:
            if w != holder:
                return False
            current = self.store.me.lease if w == me and self.store else (
                self._worker_leases.get(w, 0))
            return not lease or current == lease
        others = [w for w in self._eligible(spec) if not same_session(w)] or sorted(
            w for w in set(self.workers) | {me} if not same_session(w))
        return bool(others) and rank(spec.name, key, others)[0] == me

    def _resolve_unsure(self, lease: int, alive: bool) -> None:
        """Settle the parked lock deletions on ``lease``: dropped if the lease was seen alive
        after them, otherwise checked against the store (``_check_lost``)."""
        for job, raw, token, _ in self._unsure.pop(lease, []):
            if not alive:
                self._spawn(self._check_lost(job, raw, token), f"lost:{job}")

    async def _confirm_unsure(self) -> None:
        """Settle parked lock deletions with one read of ``/cron/workers/`` (keys only) per
        round, at most every ``UNSURE_EVERY`` seconds, instead of one read per deletion."""
        while True:
            await self._unsure_wake.wait()
            await asyncio.sleep(UNSURE_EVERY)
            self._unsure_wake.clear()
            if not self._unsure:
                continue
            try:
                r = await self.client.get(keys.WORKERS, prefix=True, keys_only=True)
            except ClientError as err:
                log.debug("lost.confirm_failed", error=str(err))
                self._unsure_wake.set()
                continue
            live = {kv.lease for kv in r.kvs}
            for lease in list(self._unsure):
                parked = self._unsure[lease]
                settled = [d for d in parked if d[3] <= r.revision]
                if len(settled) < len(parked):  # deletions newer than the read: next round
                    self._unsure[lease] = [d for d in parked if d[3] > r.revision]
                    self._unsure_wake.set()
                else:
                    del self._unsure[lease]
                if lease not in live:
                    for job, raw, token, _ in settled:
                        self._spawn(self._check_lost(job, raw, token), f"lost:{job}")

    async def _check_lost(self, job: str, raw_holder: bytes, token: int) -> None:
        """A lock (created at ``token``) vanished and its holder's session may be gone. If
        its run is still active, mark it lost (the txns are guarded)."""
        try:
            holder = LockHolder.decode(raw_holder)
        except (ValueError, TypeError):
            return
        entry = self.jobs.get(job)
        if entry is None or (job, holder.occurrence) in self.running:
            return
        await self._lost(entry, holder.occurrence, holder.run_id, token,
                         note=f"holder {holder.worker} lost its session")

    async def _lost(self, entry: JobEntry, occ: str, run_id: str, token: int | None,
                    note: str) -> None:
        """Mark one run lost and, for ``on_lost: rerun``, re-run it if it never started."""
        store = self.store
        assert store is not None
        job = entry.spec.name
        if self._stopping:  # it could not re-run it: the sweep of a live worker will
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
        if (instant is None or entry.spec.on_lost != "rerun" or lost.started_at != 0
                or self.config.name not in self._eligible(entry.spec)
                or self._deadline(entry.spec, instant) < 0):
            return
        try:
            claim = await store.takeover(job, occ, lost, lost.fencing_token,
                                         spec_revision=entry.revision)
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
            self._spawn(self._execute(entry, claim, instant), f"run:{job}:{occ}")

    async def _sweep(self) -> None:
        """Every ``sweep_interval`` every worker looks (``_sweep_runs``) for
        active runs whose claimant's session lease has expired — runs the lock events did
        not report (compaction, every worker down at the time, runs without the lock) — and
        marks them lost."""
        interval = self.config.sweep_interval
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(ClientError):
                await self._release_orphans()
            try:
                await self._sweep_runs(str(int(time.time() // interval)))
            except ClientError as err:
                log.debug("sweep.failed", error=str(err))

    async def _compactor(self) -> None:
        """Keep the store's history bounded (``WorkerConfig.compact_retention``).

        Every worker samples the store's revision each period; the worker ranked first
        among the live ones for the period compacts to its newest sample at least
        ``retention`` old. Views (jobs, workers, locks, ...) resume their watches from
        recent revisions and re-list if one was compacted, and nothing the scheduler
        decides reads history, so compaction never changes what runs."""
        retention = self.config.compact_retention
        if retention <= 0:
            return
        period = min(max(retention / 10, 0.1), 60.0)
        samples: deque[tuple[float, int]] = deque()
        while True:
            await asyncio.sleep(period)
            try:
                rev = (await self.client.get(keys.WORKERS, prefix=True, count_only=True,
                                             serializable=True)).header.revision
            except ClientError:
                continue
            now = time.monotonic()
            samples.append((now, rev))
            target = 0
            while samples and samples[0][0] <= now - retention:
                target = samples.popleft()[1]
            me = self.config.name
            turn = str(int(time.time() // period))
            if not target or rank("\x00compact", turn, set(self.workers) | {me})[0] != me:
                continue
            try:
                await self.client.compact(target)
                log.info("store.compacted", revision=target, retention=retention)
            except CompactedError:
                pass  # compacted at or past it already (another worker, an operator)
            except ClientError as err:
                log.warning("store.compact_failed", revision=target, error=str(err))

    async def _release_orphans(self) -> None:
        """Free locks held on this worker's session for runs it is not running (a claim
        whose answer was lost and never adopted): otherwise they would block the job for
        as long as this worker lives."""
        store = self.store
        if store is None:
            return
        r = await self.client.get(keys.LOCKS, prefix=True)
        for kv in r.kvs:
            if kv.lease != store.me.lease:
                continue
            try:
                holder = LockHolder.decode(kv.value)
            except (ValueError, TypeError):
                continue
            job = keys.job_from(kv.key, keys.LOCKS)
            if job is None or (job, holder.occurrence) in self.running:
                continue
            # Re-check after a moment: a claim may be between its txn and _execute.
            await asyncio.sleep(1.0)
            if (job, holder.occurrence) in self.running:
                continue
            rec, rkv = await store.get_run_kv(job, holder.occurrence)
            if rec is not None and rkv is not None and rec.run_id == holder.run_id and (
                    rec.status in ACTIVE):
                # Ours, and this worker no longer tracks it: a claim whose answer was lost
                # (never started), or a run whose task ended without its final write.
                rec.fencing_token = kv.create_revision
                claim = Claim(job, holder.occurrence, kv.create_revision, rkv.mod_revision,
                              rec, True, store.me.lease)
                if rec.status == "claimed":
                    await self._abandon(claim, "orphaned claim (its answer was lost)")
                else:
                    log.warning("run.orphaned", job=job, occurrence=holder.occurrence)
                    with contextlib.suppress(ClientError):
                        await store.finish(claim, status="lost", finished_at=time.time(),
                                           note="orphaned run: its worker lost track of it")
            else:
                res = await self.client.txn([Compare.create(kv.key) == kv.create_revision],
                                            [delete(kv.key)], [])
                if res.succeeded:
                    log.warning("lock.orphan_released", job=job, occurrence=holder.occurrence)

    async def _sweep_runs(self, period: str = "") -> None:
        """One pass over every run record, in pages of ``SWEEP_PAGE`` (serializable reads:
        a stale page only delays a finding to the next pass). Only records whose bytes say
        they are active are decoded; a claimant lease that the workers view shows alive is
        not asked about, any other is asked once per pass. Every worker makes the pass and
        acts on the runs it is first for in this period (``_first_for``), so a lost run is
        re-run by a worker allowed to run its job."""
        start = keys.RUNS.encode()
        end = prefix_end(start)
        live = set(self._worker_leases.values())
        alive: dict[int, bool] = {}
        while True:
            r = await self.client.get(start, range_end=end, limit=SWEEP_PAGE,
                                      serializable=True)
            for kv in r.kvs:
                if _ACTIVE_STATUS.search(kv.value) is None:
                    continue
                try:
                    rec = RunRecord.decode(kv.value)
                except (ValueError, TypeError):
                    continue
                entry = self.jobs.get(rec.job)
                if (entry is None or rec.status not in ACTIVE
                        or (rec.job, rec.occurrence) in self.running):
                    continue
                if rec.lease:
                    if rec.lease in live:
                        continue  # its claimant's session is registered: alive
                    if rec.lease not in alive:
                        alive[rec.lease] = (await self.client.time_to_live(rec.lease)).ttl > 0
                    if alive[rec.lease]:
                        continue
                elif time.time() - rec.claimed_at < 2 * self.config.session_ttl:
                    continue  # an old-format record: give its holder a session's time
                if not self._first_for(entry.spec, f"sweep:{period}:{rec.occurrence}",
                                       rec.worker, rec.lease):
                    continue
                await self._lost(entry, rec.occurrence, rec.run_id, None,
                                 note=f"claimant {rec.worker}'s session expired")
            if not r.more or not r.kvs:
                return
            start = r.kvs[-1].key + b"\0"

    async def _request_kill(self, job: str, occurrence: str | None, reason: str) -> None:
        grant = await self.client.grant(5)
        body = json.dumps({"occurrence": occurrence, "reason": reason, "by": self.config.name})
        await self.client.put(keys.killer_key(job), body, lease=grant.id)

    async def _on_killer_batch(self, batch: WatchBatch) -> None:
        for e in batch.events:
            if not e.is_put:
                continue
            job = keys.job_from(e.kv.key, keys.KILLERS)
            try:
                if job is None:
                    raise BadValue("not /cron/killer/<valid job name>")
                req = json_object(e.kv.value)
                wanted = req.get("occurrence")
                if wanted is not None and not keys.valid_occurrence(wanted):
                    raise BadValue("occurrence is not an occurrence id")
            except BadValue as err:
                report_bad(e.kv.key, e.kv.mod_revision, str(err), "killers")
                continue
            now = self.clock.now()
            for (j, occ), r in list(self.running.items()):
                if j != job or wanted not in (None, occ):
                    continue
                if wanted is None and _not_due(occ, now):
                    continue  # "kill the job" means its runs, not a claim sent ahead
                r.kill_reason = f"kill requested: {req.get('reason', '')}".strip()
                if r.process is not None:
                    r.process.kill(r.kill_reason)


    async def _on_trigger_batch(self, batch: WatchBatch) -> None:
        for e in batch.events:
            if not e.is_put:
                continue
            found = keys.job_occurrence_from(e.kv.key, keys.TRIGGERS)
            if found is None or MANUAL_SUFFIX not in found[1]:
                report_bad(e.kv.key, e.kv.mod_revision,
                           "not /cron/trigger/<job>/<manual occurrence id>", "triggers")
                continue
            job, occ = found
            entry = self.jobs.get(job)
            instant = occurrence_instant(occ)
            if entry is None or instant is None:
                continue
            self._fire(entry, instant, occ)


def _not_due(occ: str, now: datetime) -> bool:
    """True for the occurrence of a claim sent ahead that waits for its instant."""
    instant = occurrence_instant(occ)
    return instant is not None and instant > now


class StageStats:
    """Recent durations of the stages of an occurrence, in seconds, for the fire-lag
    figures logged at stop: ``wake`` (fire instant → its task runs), ``claim`` (the claim
    txn, retries included, until the claiming task runs again), ``txn`` (the round trip of
    one batched store txn), ``spawn`` (starting the process), ``fire`` (fire instant → the
    process is spawned)."""

    def __init__(self, keep: int = 100_000) -> None:
        self.samples: dict[str, deque[float]] = {}
        self.keep = keep

    def add(self, stage: str, seconds: float) -> None:
        q = self.samples.get(stage)
        if q is None:
            q = self.samples[stage] = deque(maxlen=self.keep)
        q.append(seconds)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for stage, q in self.samples.items():
            xs = sorted(q)
            if xs:
                out[stage] = {"n": len(xs), "p50": round(xs[len(xs) // 2] * 1000, 1),
                              "p99": round(xs[max(0, int(len(xs) * 0.99) - 1)] * 1000, 1),
                              "max": round(xs[-1] * 1000, 1)}
        return out


def _status(result: RunResult, kill_reason: str | None) -> str:
    if kill_reason is not None:
        return "lost" if kill_reason.startswith("deadman") else "killed"
    if result.timed_out:
        return "timeout"
    if result.killed:
        return "killed"
    return "succeeded" if result.exit_code == 0 else "failed"


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


__all__ = ["MANUAL_SUFFIX", "Worker", "WorkerConfig"]
