"""The worker: builds its parts around one shared state and runs their tasks.

A worker talks to the store only through :mod:`coord.client`, so it runs against an
embedded coord or a real etcd alike. Its parts:

* :mod:`~scheduler.worker.session` — the session lease, its registration and the deadman;
* :mod:`~scheduler.worker.view` — one list-and-watch view per watched prefix;
* :mod:`~scheduler.worker.catalog` — the jobs, suspensions and workers the views hold;
* :mod:`~scheduler.worker.firing` — job timers, ranking, claiming (ahead), triggers;
* :mod:`~scheduler.worker.running` — attempts, retries, fenced writes, kill requests;
* :mod:`~scheduler.worker.reaping` — lost runs, unsure lock deletions, sweep, orphans;
* :mod:`~scheduler.worker.housekeeping` — store compaction, run-history pruning;
* :mod:`~scheduler.worker.decide` — the decisions among them, pure.

Stop (SIGTERM): stop firing and claiming, let running jobs — and claims in flight or
waiting for their instant, which start then — finish (up to ``stop_timeout``), record
them, release locks and revoke the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog

from coord.aiotools import within
from coord.client import Client, ClientError
from scheduler import keys
from scheduler.claim import ClaimStore
from scheduler.notify import Notifier, run_ops
from scheduler.notify_deadman import DeadMan
from scheduler.suspension import Suspension
from scheduler.worker.catalog import Catalog
from scheduler.worker.config import WorkerConfig
from scheduler.worker.firing import Firing
from scheduler.worker.housekeeping import Housekeeper
from scheduler.worker.reaping import Reaper
from scheduler.worker.running import Runner
from scheduler.worker.session import Session
from scheduler.worker.state import JobEntry, Running, Shared, StageStats
from scheduler.worker.view import View

log = structlog.get_logger("scheduler.worker")

STOP_CANCEL_TIMEOUT = 5.0
"""Seconds a graceful stop waits for cancelled tasks to end before it goes on regardless."""
STOP_PROGRESS_EVERY = 5.0
"""Seconds between two ``worker.stop_waiting`` lines while a stop waits for running jobs."""


class Worker:
    """One scheduler worker. ``await Worker(config).run(stop_event)``."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.clock = config.clock
        self.client = Client(config.endpoints, timeout=5.0, channels=config.channels,
                             tls=config.tls, auth=config.auth)
        ctx = self.ctx = Shared(config, self.client)
        self.sessions = Session(ctx)
        self.keeper = Housekeeper(ctx)
        self.runner = Runner(ctx, self.keeper)
        self.firing = Firing(ctx, self.runner)
        self.reaper = Reaper(ctx, self.runner)
        self.catalog = Catalog(ctx, self.firing, self.reaper)
        if config.metrics is not None:
            config.metrics.attach(ctx)

    # ------------------------------------------------------------------ state, for tests
    @property
    def jobs(self) -> dict[str, JobEntry]:
        return self.ctx.jobs

    @property
    def workers(self) -> dict[str, dict[str, str]]:
        return self.ctx.workers

    @property
    def running(self) -> dict[tuple[str, str], Running]:
        return self.ctx.running

    @property
    def suspended(self) -> dict[str, Suspension]:
        return self.ctx.suspended

    @property
    def store(self) -> ClaimStore | None:
        return self.ctx.store

    @store.setter
    def store(self, store: ClaimStore | None) -> None:
        self.ctx.store = store

    @property
    def stats(self) -> StageStats:
        return self.ctx.stats

    @property
    def ready(self) -> asyncio.Event:
        """Set once the worker is registered and has loaded the jobs (tests wait on it)."""
        return self.ctx.ready

    # ------------------------------------------------------------------ lifecycle
    def _views(self) -> dict[str, View]:
        """The watched prefixes, by task name: the jobs (specs), the live workers (for
        rendezvous ranking), the locks (a freed job, or a dead holder whose run must be
        marked lost), the suspensions, and the kill and trigger requests."""
        c, catalog = self.client, self.catalog
        return {
            "jobs": View(c, keys.JOBS, catalog.on_job_batch, load=catalog.load_jobs),
            "workers": View(c, keys.WORKERS, catalog.on_worker_batch,
                            load=catalog.load_workers),
            "locks": View(c, keys.LOCKS, self.reaper.on_lock_batch, prev_kv=True),
            "suspensions": View(c, keys.SUSPENSIONS, catalog.on_suspension_batch,
                                load=catalog.load_suspensions),
            "killers": View(c, keys.KILLERS, self.runner.on_killer_batch),
            "triggers": View(c, keys.TRIGGERS, self.firing.on_trigger_batch),
        }

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker.starting", worker=self.config.name, endpoints=self.config.endpoints,
                 tags=self.config.tags)
        # The store may be unreachable for as long as it takes (peers still booting): a stop
        # must work meanwhile too.
        opening = asyncio.ensure_future(self.sessions.open())
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
        spawn = self.ctx.spawn
        tasks = [spawn(v.run(), name) for name, v in self._views().items()]
        tasks += [
            spawn(self.sessions.deadman(), "deadman"),
            spawn(self.reaper.sweep(), "sweep"),
            spawn(self.reaper.confirm_unsure(), "confirm-lost"),
            spawn(self.keeper.compactor(), "compactor"),
            *self._notifications(),
        ]
        try:
            await stop.wait()
        finally:
            await self._shutdown(tasks)

    def _notifications(self) -> list[asyncio.Task[Any]]:
        """The outbox hook of the record txns, the delivery loop and the dead-man checks
        (:mod:`scheduler.notify`)."""
        ctx = self.ctx
        assert ctx.store is not None

        def spec_of(job: str) -> Any:
            entry = ctx.jobs.get(job)
            return entry.spec if entry is not None else None

        def lease() -> int | None:
            s = ctx.session
            return s.lease_id if s is not None and not s.lost.is_set() else None

        ctx.store.outbox = lambda rec: run_ops(spec_of(rec.job), rec)
        self.notifier = Notifier(self.client, self.config.name, lease,
                                 lambda: any(e.spec.notify for e in ctx.jobs.values()))
        self.deadman_alerts = DeadMan(self.client, self.config.name, self.config.host,
                                      lambda: [e.spec for e in ctx.jobs.values()],
                                      lambda: ctx.live().keys())
        return [ctx.spawn(self.notifier.run(), "notify"),
                ctx.spawn(self.deadman_alerts.run(), "deadman-alerts")]

    async def _shutdown(self, views: list[asyncio.Task[Any]]) -> None:
        ctx = self.ctx
        ctx.stopping = True
        log.info("worker.stopping", worker=self.config.name, running=len(ctx.running))
        for entry in ctx.jobs.values():
            if entry.task is not None:
                entry.task.cancel()
        for t in views:
            t.cancel()
        # Runs, and occurrences being claimed (a claim in flight may land; one sent ahead
        # starts at its instant): a stopping worker finishes what it has claimed.
        runs = [t for t in ctx.tasks if t.get_name().startswith(("run:", "occ:"))]
        if runs:
            pending = await self._wait_for_runs(runs)
            for r in ctx.running.values():
                if r.process is not None:
                    r.process.kill("worker stopping")
            if pending:  # killed just now: give their tasks a moment to record the end
                await asyncio.wait(pending, timeout=STOP_CANCEL_TIMEOUT / 2)
        leftover = list(ctx.tasks)
        for t in leftover:
            t.cancel()
        if leftover:
            # A stop takes at most --stop-timeout plus STOP_CANCEL_TIMEOUT, whatever the store
            # does (claims retrying against a store without quorum must not stretch it).
            _, stuck = await asyncio.wait(leftover, timeout=STOP_CANCEL_TIMEOUT / 2)
            if stuck:  # a bug, but a stop must not hang on it: say which, and go on
                log.error("worker.stop_stuck_tasks", worker=self.config.name,
                          tasks=sorted(t.get_name() for t in stuck))
        if ctx.session is not None:
            with contextlib.suppress(TimeoutError):
                await within(ctx.session.stop(), STOP_CANCEL_TIMEOUT)
            with contextlib.suppress(ClientError):
                await self.client.revoke(ctx.session.lease_id)
        await self.client.close()
        store = ctx.store
        log.info("worker.stopped", worker=self.config.name,
                 claim_txns=store.txns if store else 0,
                 batched_txns=store.batcher.batches if store else 0,
                 lag_ms=ctx.stats.summary())

    async def _wait_for_runs(self, runs: list[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
        """Wait up to ``stop_timeout`` for what this worker runs or has claimed, saying which
        jobs it waits for every few seconds; returns what is still pending."""
        deadline = time.monotonic() + self.config.stop_timeout
        pending = set(runs)
        while pending:
            left = deadline - time.monotonic()
            runs_now = sorted(f"{r.claim.job}@{r.claim.occurrence}"
                              for r in self.ctx.running.values())
            log.info("worker.stop_waiting", worker=self.config.name, runs=runs_now,
                     tasks=len(pending), timeout_left_s=round(max(left, 0.0), 1))
            if left <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=min(left, STOP_PROGRESS_EVERY))
        return pending
