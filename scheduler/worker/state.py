"""What the parts of a worker share: its configuration, client, views and runs.

One :class:`Shared` per worker, built by the wiring (:mod:`scheduler.worker.wiring`) and
handed to every part. The views write it, the parts read it; only the running part adds
and removes runs, only the session part replaces the session and its claim store.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from coord.client import Client, KeepAlive
from scheduler.claim import Claim, ClaimStore
from scheduler.clock import Clock
from scheduler.eligibility import ineligible_reason
from scheduler.executor import JobProcess
from scheduler.plan import eligible_workers
from scheduler.spec import JobSpec
from scheduler.suspension import Suspension
from scheduler.worker.config import WorkerConfig

log = structlog.get_logger("scheduler.worker")


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


class Shared:
    """The state the parts of one worker share, and the task set they spawn into."""

    def __init__(self, config: WorkerConfig, client: Client) -> None:
        self.config = config
        self.clock: Clock = config.clock
        self.client = client
        self.jobs: dict[str, JobEntry] = {}
        self.workers: dict[str, dict[str, str]] = {}
        """Live worker name → its tags (the workers view)."""
        self.worker_leases: dict[str, int] = {}
        """worker name → the lease of its ``/cron/workers/`` key (its session), from the view."""
        self.workers_loaded = False
        self.running: dict[tuple[str, str], Running] = {}
        self.session: KeepAlive | None = None
        self.store: ClaimStore | None = None
        self.suspended: dict[str, Suspension] = {}
        """job → its runtime suspension (``/cron/suspend/``), from the view: not spec."""
        self.suspension_ends: dict[str, tuple[float, float]] = {}
        """job → (since, until) of the last runtime suspension seen to end: its ``at`` and
        when the view saw the resume (Unix seconds, this worker's clock)."""
        self.held: dict[str, bytes] = {}
        """job → the holder value of the latest lock PUT seen on the locks watch: a backup
        learns from it that the occurrence is taken, without reading the store."""
        self.stats = StageStats()
        self.stopping = False
        self.tasks: set[asyncio.Task[Any]] = set()
        self.ready = asyncio.Event()
        """Set once the worker is registered and has loaded the jobs (tests wait on it)."""
        self._eligible_cache: dict[tuple[tuple[str, str], ...], list[str]] = {}
        self._no_worker: set[str] = set()

    # ------------------------------------------------------------------ tasks
    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self.track(task)
        return task

    def track(self, task: asyncio.Task[Any]) -> None:
        """Count ``task`` among the worker's (a graceful stop waits for ``run:``/``occ:``)."""
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("worker.task_failed", task=task.get_name(), error=repr(task.exception()))

    # ------------------------------------------------------------------ derived views
    def workers_changed(self) -> None:
        """The workers view changed: the eligibility cache is stale."""
        self._eligible_cache.clear()

    def live(self) -> dict[str, dict[str, str]]:
        """The live workers and their tags, this one included."""
        live = dict(self.workers)
        live.setdefault(self.config.name, self.config.tags)
        return live

    def eligible(self, spec: JobSpec) -> list[str]:
        key = tuple(sorted(spec.tags.items()))
        found = self._eligible_cache.get(key)
        if found is None:
            found = self._eligible_cache[key] = eligible_workers(spec.tags, self.live())
        return found

    def check_eligible(self, spec: JobSpec) -> list[str]:
        """The job's eligible workers; warns (once, until it becomes runnable again) when
        no live worker may run it."""
        eligible = self.eligible(spec)
        if not eligible:
            self.warn_ineligible(spec)
        elif self._no_worker:
            self._no_worker.discard(spec.name)
        return eligible

    def warn_ineligible(self, spec: JobSpec) -> None:
        if spec.name in self._no_worker:
            return
        reason = ineligible_reason(spec.tags, self.live())
        if reason is not None:
            self._no_worker.add(spec.name)
            log.warning("job.no_eligible_worker", job=spec.name, reason=reason)

    def is_suspended(self, name: str) -> bool:
        entry = self.jobs.get(name)
        return name in self.suspended or (entry is not None and entry.spec.suspend)

    def suspension_ended(self, name: str, ended: Suspension) -> None:
        """The view saw job ``name``'s runtime suspension ``ended`` go (a resume), now."""
        self.suspension_ends[name] = (ended.at, self.clock.now().timestamp())

    def suspended_at(self, name: str, instant: datetime) -> bool:
        """Whether the view shows job ``name`` suspended at ``instant`` (past): suspended
        since before it and still, or by the last suspension seen to end, which began
        before it and ended after it."""
        t = instant.timestamp()
        current = self.suspended.get(name)
        if current is not None:
            return current.at <= t
        since, until = self.suspension_ends.get(name, (0.0, 0.0))
        return since <= t < until

    def revision(self, spec: JobSpec) -> int:
        """The store revision of ``spec`` if it is the job's current one (records remember
        it: a restart resumes the timeline only for an unchanged spec), else 0."""
        entry = self.jobs.get(spec.name)
        return entry.revision if entry is not None and entry.spec is spec else 0

    def deadline(self, spec: JobSpec, instant: datetime) -> float:
        """Seconds left (by this worker's clock) to start this occurrence."""
        late = (self.clock.now() - instant).total_seconds()
        return spec.starting_deadline - late

    def session_is(self, lease: int) -> bool:
        """True while ``lease`` is this worker's live, unexpired session."""
        return (self.session is not None and self.session.lease_id == lease
                and not self.session.lost.is_set())

    def session_gone(self, lease: int) -> None:
        """The store says ``lease`` does not exist: if it is our session, it is lost."""
        if self.session is not None and self.session.lease_id == lease:
            log.warning("worker.session_gone", lease=f"{lease:x}")
            self.session.lost.set()
