"""A worker's ``raftcron_*`` series (``--listen-metrics``), and its readiness.

The worker calls in at three places only, and only when metrics are on
(``WorkerConfig.metrics``): the wiring attaches :class:`WorkerMetrics` to the worker's
shared state (:meth:`WorkerMetrics.attach`, which swaps in a stage-stats object that also
feeds the fire-lag histogram), the session builds its claim store from
:attr:`WorkerMetrics.claim_store` (a :class:`~scheduler.claim.ClaimStore` that counts the
run records it writes, and the fenced writes refused) and the deadman reports a session
lost. Everything else is read at scrape time from the shared state (running runs, live
workers, next fire per job, claim txns). A worker without metrics runs none of this.

Outcomes (label ``outcome``): a run record's final status, as operators name them —
``success``, ``failure``, ``timeout``, ``killed``, ``lost``, ``skipped``, ``missed``.
Labels are job names (label ``cronjob``, as kube-state-metrics names it: ``job`` is the
label Prometheus gives every scrape target) and outcomes only, never occurrences or run
ids: the series are bounded by the number of jobs. Each worker counts the records it
wrote; sum over workers for the cluster (``sum by (cronjob, outcome) (raftcron_runs_total)``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coord.client import ClientError
from coord.client.txn import range_request
from coord.pb import rpc_pb2
from scheduler import keys
from scheduler.claim import Claim, ClaimStore, RunRecord
from scheduler.spec import JobSpec

if TYPE_CHECKING:
    from scheduler.worker.state import Shared, StageStats

OUTCOMES = {"succeeded": "success", "failed": "failure", "timeout": "timeout",
            "killed": "killed", "lost": "lost", "skipped": "skipped", "missed": "missed"}
"""Run-record status → the ``outcome`` label."""

SEED_RECORDS = 10
"""Newest run records of each job read once at start for its latest success."""

FIRE_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0)
"""Seconds from an occurrence's instant to its process start."""


def outcome_of(status: str) -> str:
    return OUTCOMES.get(status, status)


class WorkerMetrics:
    """One worker's series in ``registry`` (passed in: tests run several workers in one
    process)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.runs = Counter("raftcron_runs_total",
                            "Runs recorded by this worker, by job and outcome.",
                            ["cronjob", "outcome"], registry=registry)
        self.last_success = Gauge("raftcron_last_success_timestamp_seconds",
                                  "Unix time of the latest successful run this worker "
                                  "recorded, by job.", ["cronjob"], registry=registry)
        self.fire_lag = Histogram("raftcron_fire_lag_seconds",
                                  "Seconds from an occurrence's scheduled instant to its "
                                  "process start.", buckets=FIRE_LAG_BUCKETS,
                                  registry=registry)
        self.lease_losses = Counter("raftcron_session_lost_total",
                                    "Times this worker's session lease may have expired "
                                    "(the deadman fired).", registry=registry)
        self.deadman_kills = Counter("raftcron_deadman_kills_total",
                                     "Running jobs the deadman killed after a session loss.",
                                     registry=registry)
        self.fenced = Counter("raftcron_fencing_rejections_total",
                              "Writes about a run the store refused because the run's "
                              "fencing token no longer matched.", registry=registry)
        self.ctx: Shared | None = None
        self._last: dict[str, float] = {}
        """job → the latest success known (what ``last_success`` says)."""
        metrics = self

        class MeteredClaimStore(ClaimStore):
            async def update(self, claim: Claim, **changes: Any) -> bool:
                ok = await super().update(claim, **changes)
                if not ok:
                    metrics.fenced.inc()
                return ok

            async def finish(self, claim: Claim, **changes: Any) -> bool:
                ok = await super().finish(claim, **changes)
                if ok:
                    metrics.recorded(claim.job, claim.record.status,
                                     claim.record.finished_at)
                else:
                    metrics.fenced.inc()
                return ok

            async def mark_lost(self, job: str, occurrence: str, note: str, *, run_id: str,
                                token: int | None) -> RunRecord | None:
                rec = await super().mark_lost(job, occurrence, note, run_id=run_id,
                                              token=token)
                if rec is not None:
                    metrics.recorded(job, "lost")
                return rec

            async def record_missed(self, job: str, occurrence: str, **kw: Any) -> bool:
                ok = await super().record_missed(job, occurrence, **kw)
                if ok:
                    metrics.recorded(job, kw.get("status", "missed"))
                return ok

        self.claim_store: type[ClaimStore] = MeteredClaimStore

    def recorded(self, job: str, status: str, finished_at: float | None = None) -> None:
        """A run record of ``job`` reached its final ``status`` (finished at
        ``finished_at``, the record's own time; now if it has none)."""
        if status not in OUTCOMES:
            return
        self.runs.labels(job, outcome_of(status)).inc()
        if status == "succeeded":
            self.succeeded(job, float(finished_at or time.time()))

    def succeeded(self, job: str, at: float) -> None:
        if at > self._last.get(job, 0.0):
            self._last[job] = at
            self.last_success.labels(job).set(at)

    async def seed(self, ctx: Shared) -> None:
        """Learn each job's latest success from its newest run records (once, after the
        jobs are loaded): a restarted worker does not forget that a job succeeded an hour
        ago, and a job that never succeeds again after a restart of every worker still
        has a ``last_success`` for the overdue alert to grow old. One small range per job,
        one at a time, in the background."""
        for name in sorted(ctx.jobs):
            if ctx.stopping:
                return
            req = range_request(keys.runs_prefix(name), prefix=True, limit=SEED_RECORDS)
            req.sort_order = rpc_pb2.RangeRequest.DESCEND
            req.sort_target = rpc_pb2.RangeRequest.KEY
            try:
                result = await ctx.client.range(req)
            except ClientError:
                continue
            for kv in result.kvs:
                try:
                    rec = RunRecord.decode(kv.value)
                except (ValueError, TypeError):
                    continue
                if rec.status == "succeeded" and rec.finished_at:
                    self.succeeded(name, float(rec.finished_at))

    def session_lost(self, killed: int) -> None:
        self.lease_losses.inc()
        self.deadman_kills.inc(killed)

    def attach(self, ctx: Shared) -> None:
        """Read ``ctx`` at scrape time, and feed the fire-lag histogram from its stage
        stats (the ``fire`` stage: instant → process start)."""
        self.ctx = ctx
        lag = self.fire_lag
        stats: StageStats = ctx.stats
        plain_add = stats.add

        def add(stage: str, seconds: float) -> None:
            plain_add(stage, seconds)
            if stage == "fire":
                lag.observe(max(seconds, 0.0))

        stats.add = add  # type: ignore[method-assign]
        self.registry.register(StateCollector(ctx, self))

    async def ready_check(self) -> str | None:
        """``/readyz`` of a worker: its session is open and its views are synced."""
        ctx = self.ctx
        if ctx is None:
            return "worker not started"
        if ctx.session is None or ctx.session.lost.is_set():
            return "worker session not open"
        if not ctx.ready.is_set():
            return "worker views not synced"
        return None


class StateCollector(Collector):
    """The series read off a worker's shared state at scrape time."""

    def __init__(self, ctx: Shared, metrics: WorkerMetrics) -> None:
        self.ctx = ctx
        self.metrics = metrics
        self._seeding: Any = None
        """The seeding task (:meth:`WorkerMetrics.seed`), started by the first scrape
        once the worker is ready: a worker nobody scrapes reads nothing."""
        self._next: dict[str, tuple[JobSpec, datetime]] = {}
        """job → (the spec, its next occurrence) as last computed: recomputed only once
        that instant has passed or the spec changed (about 15 µs a job otherwise, which
        with thousands of jobs would hold the worker's loop at every scrape)."""

    def next_fire(self, spec: JobSpec, now: datetime) -> datetime | None:
        known = self._next.get(spec.name)
        if known is not None and known[0] is spec and known[1] > now:
            return known[1]
        when = spec.timetable().next_after(now)
        if when is None:
            self._next.pop(spec.name, None)
        else:
            self._next[spec.name] = (spec, when)
        return when

    def collect(self) -> Iterator[Metric]:
        ctx = self.ctx
        if self._seeding is None and ctx.ready.is_set() and not ctx.stopping:
            self._seeding = ctx.spawn(self.metrics.seed(ctx), "metrics:seed")
        yield GaugeMetricFamily("raftcron_running_runs", "Runs this worker is running now.",
                                value=len(ctx.running))
        yield GaugeMetricFamily("raftcron_workers_alive",
                                "Live workers this worker sees (itself included).",
                                value=len(ctx.live()))
        store = ctx.store
        yield CounterMetricFamily("raftcron_claim_txns",
                                  "Claim txns this worker sent (takeovers included).",
                                  value=store.txns if store is not None else 0)
        nxt = GaugeMetricFamily("raftcron_next_fire_timestamp_seconds",
                                "Unix time of the job's next scheduled occurrence (absent "
                                "while suspended).", labels=["cronjob"])
        now = ctx.clock.now()
        for name, entry in sorted(ctx.jobs.items()):
            if ctx.is_suspended(name):
                continue
            when = self.next_fire(entry.spec, now)
            if when is not None:
                nxt.add_metric([name], when.timestamp())
        for gone in self._next.keys() - ctx.jobs.keys():
            del self._next[gone]
        yield nxt
