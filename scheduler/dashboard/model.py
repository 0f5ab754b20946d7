"""The dashboard's live read model: jobs, suspensions, locks, workers and run summaries in
memory, from one paged range read of each prefix and then one watch of it.

One model per dashboard process, shared by every request and every SSE subscriber: a page
is a slice of the sorted jobs, never a store read per job, and the store sees one watch per
prefix however many browsers are open (docs/api.md, "How the dashboard reads the store").

Invariants: each prefix's state is the store's at some revision, then follows every event
in order; after a compaction or a refused watch the prefix is read again from scratch (its
state replaced, not merged). Run records are kept without their output tail (memory: a
20,000-job store holds up to ``history_limit`` records per job); the run and job views read
the full record from the store when asked for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from sortedcontainers import SortedDict

from coord.aiotools import within
from coord.client import Client, ClientError, CompactedError, EventType, KeyValue
from scheduler import keys
from scheduler.attempts import attempt_count
from scheduler.claim import LockHolder, RunRecord
from scheduler.cliviews import run_json
from scheduler.dashboard.cache import LeaseTTLs, RunIndex, run_record, slim
from scheduler.dashboard.hub import Hub
from scheduler.decode import BadValue, decode_spec, json_object
from scheduler.joblist import scan
from scheduler.output_stream import OUTPUT
from scheduler.plan import occurrence_instant
from scheduler.spec import JobSpec
from scheduler.suspension import Suspension

log = structlog.get_logger("raftcron.dashboard")

RUNS_PAGE = 200
"""Run records per range read (each may carry a 4 KiB output tail: well under 2 MiB)."""
RETRY_MAX = 5.0
"""Seconds between two attempts to read a prefix again at most (after a store error)."""


def iso(t: datetime | None) -> str | None:
    """An instant as ISO 8601 (milliseconds only when it has a fraction), or None."""
    if t is None:
        return None
    return t.isoformat(timespec="milliseconds" if t.microsecond else "seconds")


def unix_iso(t: float) -> str | None:
    return iso(datetime.fromtimestamp(t, UTC)) if t else None


@dataclass
class JobRow:
    """One stored job (its spec, or why the stored value is not a valid one)."""

    name: str
    spec: JobSpec | None
    error: str
    revision: int
    seen_at: float
    """When this model first saw the job (the reference for "overdue" before any run)."""
    _next: datetime | None = field(default=None, repr=False)
    _next_checked: bool = field(default=False, repr=False)
    _due: tuple[datetime, datetime | None] | None = field(default=None, repr=False)

    def due_after(self, since: datetime) -> datetime | None:
        """The first fire instant after ``since`` (cached for the last ``since`` asked:
        the overview asks it of every job, with the same last run, again and again)."""
        if self.spec is None:
            return None
        if self._due is None or self._due[0] != since:
            self._due = (since, self.spec.timetable().next_after(since))
        return self._due[1]

    def next_fire(self, now: datetime) -> datetime | None:
        """The next fire instant after ``now`` (cached until it passes)."""
        if self.spec is None:
            return None
        if not self._next_checked or (self._next is not None and self._next <= now):
            self._next = self.spec.timetable().next_after(now)
            self._next_checked = True
        return self._next


@dataclass
class LockRow:
    job: str
    holder: LockHolder | None
    raw: str
    lease: int
    fencing_token: int

    def to_json(self, ttl_left: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"job": self.job, "held": True,
                               "fencing_token": self.fencing_token,
                               "lease": f"{self.lease:x}", "ttl_left": ttl_left}
        h = self.holder
        if h is None:
            out["raw"] = self.raw
            return out
        out.update(worker=h.worker, host=h.host, pid=h.pid, occurrence=h.occurrence,
                   run_id=h.run_id, since=unix_iso(h.started_at))
        return out


Follower = Callable[[list[Any]], None]
"""Replaces a prefix's state with what a range read found (its KeyValues; for the runs,
their slim records)."""
Applier = Callable[[int, KeyValue], Awaitable[None]]
"""Applies one watch event (type, kv) to a prefix's state."""


class ReadModel:
    """What the pages and the API read, kept current by store watches. ``start`` returns at
    once; :meth:`wait_ready` waits for the first read of every prefix."""

    def __init__(self, client: Client, hub: Hub | None = None) -> None:
        self.client = client
        self.hub = hub or Hub()
        self.jobs: SortedDict = SortedDict()  # name -> JobRow, sorted by name
        self.suspensions: dict[str, Suspension] = {}
        self.locks: dict[str, LockRow] = {}
        self.workers: dict[str, dict[str, Any]] = {}
        self.index = RunIndex()
        self.ttls = LeaseTTLs(client)
        self.revision = 0
        """The newest store revision the model has seen (read or watched)."""
        self.last_error = ""
        """The last store error a read or watch met ("" once it reads again)."""
        self._ready = asyncio.Event()
        self._loaded: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._followed: dict[str, tuple[Follower, Applier, int]] = {
            keys.JOBS: (self._reset_jobs, self._on_job, 0),
            keys.SUSPENSIONS: (self._reset_suspensions, self._on_suspension, 0),
            keys.LOCKS: (self._reset_locks, self._on_lock, 0),
            keys.WORKERS: (self._reset_workers, self._on_worker, 0),
            keys.RUNS: (self._reset_runs, self._on_run, RUNS_PAGE),
        }

    @property
    def runs(self) -> dict[str, dict[str, RunRecord]]:
        return self.index.runs

    @property
    def last(self) -> dict[str, RunRecord]:
        return self.index.last

    @property
    def active(self) -> dict[tuple[str, str], RunRecord]:
        return self.index.active

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start following every prefix (in the background: the store may be down)."""
        for prefix, (reset, apply, page) in self._followed.items():
            self._tasks.append(asyncio.create_task(
                self._follow(prefix, reset, apply, page), name=f"dashboard:{prefix}"))
        self._tasks.append(asyncio.create_task(self._follow_output(),
                                               name="dashboard:output"))
        self._tasks.append(asyncio.create_task(self._warm(), name="dashboard:warm"))

    async def _warm(self) -> None:
        """Once read, work out each job's due instant (cached on its row) in slices, so
        the first overview of a large store does not pay for it (~1.4 s at 20,000 jobs)."""
        await self._ready.wait()
        for i, row in enumerate(list(self.jobs.values())):
            self._due(row)
            if i % 200 == 199:
                await asyncio.sleep(0)  # let requests and watch events in

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self, timeout: float) -> bool:
        """Whether every prefix has been read once, waiting up to ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await within(self._ready.wait(), timeout)
        return self._ready.is_set()

    async def _follow(self, prefix: str, reset: Follower, apply: Applier, page: int) -> None:
        delay = 0.1
        while True:
            try:
                first = await self.client.get(prefix, prefix=True, count_only=True)
                rev = first.header.revision
                # Runs are kept slim from the first page on: the full records of a large
                # store (4 KiB of output each) are never all in memory at once.
                found: list[Any] = [
                    (slim(r) if (r := run_record(kv)) is not None else None)
                    if prefix == keys.RUNS else kv
                    async for _, kv in scan(self.client, prefix.encode(), revision=rev,
                                            page=page)]
                reset([f for f in found if f is not None])
                self._seen(rev)
                self.last_error = ""
                self._loaded.add(prefix)
                if self._loaded >= set(self._followed):
                    self._ready.set()
                async for batch in self.client.watch(prefix, prefix=True,
                                                     start_revision=rev + 1):
                    delay = 0.1
                    for ev in batch.events:
                        await apply(ev.type, ev.kv)
                    self._seen(batch.revision)
            except CompactedError:
                log.info("dashboard.reread", prefix=prefix, why="compacted")
            except ClientError as err:
                self.last_error = str(err)
                log.warning("dashboard.store_error", prefix=prefix, error=str(err),
                            retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _follow_output(self) -> None:
        """Running jobs' output keys (scheduler.output_stream): published as ``output``
        events only, nothing kept."""
        delay = 0.1
        while True:
            try:
                async for batch in self.client.watch(OUTPUT, prefix=True, no_delete=True):
                    delay = 0.1
                    for ev in batch.events:
                        self._on_output(ev.kv)
            except ClientError as err:
                log.warning("dashboard.store_error", prefix=OUTPUT, error=str(err))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    def _seen(self, revision: int) -> None:
        self.revision = max(self.revision, revision)

    # ------------------------------------------------------------------ jobs

    def _job_row(self, kv: KeyValue) -> JobRow | None:
        name = keys.job_from(kv.key, keys.JOBS)
        if name is None:
            return None
        old = self.jobs.get(name)
        seen = old.seen_at if old is not None else time.time()
        try:
            return JobRow(name, decode_spec(kv.key, kv.value), "", kv.mod_revision, seen)
        except BadValue as err:
            return JobRow(name, None, str(err), kv.mod_revision, seen)

    def _reset_jobs(self, kvs: list[KeyValue]) -> None:
        rows = (self._job_row(kv) for kv in kvs)
        self.jobs = SortedDict({r.name: r for r in rows if r is not None})

    async def _on_job(self, type_: int, kv: KeyValue) -> None:
        name = keys.job_from(kv.key, keys.JOBS)
        if name is None:
            return
        if type_ == EventType.DELETE:
            self.jobs.pop(name, None)
            self.hub.publish("job", name, {"name": name, "deleted": True})
            return
        row = self._job_row(kv)
        if row is not None:
            self.jobs[name] = row
            if self.hub.wants_any("job"):  # an apply of 20,000 jobs: no work for nobody
                self.hub.publish("job", name, self.job_json(row, datetime.now(UTC)))

    # ------------------------------------------------------------------ suspensions

    def _reset_suspensions(self, kvs: list[KeyValue]) -> None:
        self.suspensions = {name: Suspension.decode(kv.value) for kv in kvs
                            if (name := keys.job_from(kv.key, keys.SUSPENSIONS))}

    async def _on_suspension(self, type_: int, kv: KeyValue) -> None:
        name = keys.job_from(kv.key, keys.SUSPENSIONS)
        if name is None:
            return
        if type_ == EventType.DELETE:
            self.suspensions.pop(name, None)
        else:
            self.suspensions[name] = Suspension.decode(kv.value)
        row = self.jobs.get(name)
        if row is not None and self.hub.wants_any("job"):
            self.hub.publish("job", name, self.job_json(row, datetime.now(UTC)))

    # ------------------------------------------------------------------ locks

    @staticmethod
    def _lock_row(kv: KeyValue) -> LockRow | None:
        job = keys.job_from(kv.key, keys.LOCKS)
        if job is None:
            return None
        try:
            holder: LockHolder | None = LockHolder.decode(kv.value)
        except (ValueError, TypeError):
            holder = None
        return LockRow(job, holder, kv.value.decode(errors="replace"), kv.lease,
                       kv.create_revision)

    def _reset_locks(self, kvs: list[KeyValue]) -> None:
        rows = (self._lock_row(kv) for kv in kvs)
        self.locks = {r.job: r for r in rows if r is not None}

    async def _on_lock(self, type_: int, kv: KeyValue) -> None:
        job = keys.job_from(kv.key, keys.LOCKS)
        if job is None:
            return
        if type_ == EventType.DELETE:
            self.locks.pop(job, None)
            self.hub.publish("lock", job, {"job": job, "held": False})
            return
        row = self._lock_row(kv)
        if row is None:
            return
        self.locks[job] = row
        if self.hub.wants_any("lock"):
            ttl = await self.ttl_left(row.lease)
            self.hub.publish("lock", job, row.to_json(ttl))

    async def ttl_left(self, lease: int) -> int | None:
        """Seconds left on a lease (-1: expired; None: no lease or the store did not say)."""
        return await self.ttls.left(lease)

    async def locks_json(self) -> list[dict[str, Any]]:
        rows = sorted(self.locks.values(), key=lambda r: r.job)
        ttls = await asyncio.gather(*(self.ttl_left(r.lease) for r in rows))
        return [r.to_json(ttl) for r, ttl in zip(rows, ttls, strict=True)]

    # ------------------------------------------------------------------ workers

    @staticmethod
    def _worker(kv: KeyValue) -> tuple[str, dict[str, Any]] | None:
        name = keys.worker_from(kv.key)
        if name is None:
            return None
        try:
            info = json_object(kv.value)
        except BadValue:
            info = {}
        started = info.get("started_at")
        ok = isinstance(started, int | float) and not isinstance(started, bool)
        tags = info.get("tags")
        return name, {"worker": name, "host": str(info.get("host", "")),
                      "pid": info.get("pid", 0) if isinstance(info.get("pid"), int) else 0,
                      "tags": tags if isinstance(tags, dict) else {},
                      "version": str(info.get("version", "")),
                      "started_at": unix_iso(float(started)) if ok and started else None,
                      "lease": f"{kv.lease:x}", "alive": True}

    def _reset_workers(self, kvs: list[KeyValue]) -> None:
        self.workers = dict(w for kv in kvs if (w := self._worker(kv)) is not None)

    async def _on_worker(self, type_: int, kv: KeyValue) -> None:
        name = keys.worker_from(kv.key)
        if name is None:
            return
        if type_ == EventType.DELETE:
            self.workers.pop(name, None)
            self.hub.publish("worker", None, {"worker": name, "alive": False})
            return
        w = self._worker(kv)
        if w is not None:
            self.workers[name] = w[1]
            self.hub.publish("worker", None, w[1])

    # ------------------------------------------------------------------ runs

    def _reset_runs(self, records: list[RunRecord]) -> None:
        index = RunIndex()
        for rec in records:
            index.keep(rec)
        self.index = index

    async def _on_run(self, type_: int, kv: KeyValue) -> None:
        if type_ == EventType.DELETE:
            where = keys.job_occurrence_from(kv.key, keys.RUNS)
            if where is not None:
                self.index.drop(*where)
            return
        rec = run_record(kv)
        if rec is None:
            return
        self.index.keep(slim(rec))
        if self.hub.wants_any("run"):
            self.hub.publish("run", rec.job, run_json(rec))

    def _on_output(self, kv: KeyValue) -> None:
        where = keys.job_occurrence_from(kv.key, OUTPUT)
        if where is None or not self.hub.wants_any("output"):
            return
        try:
            body = json_object(kv.value)
        except BadValue:
            return
        tail = body.get("tail")
        self.hub.publish("output", where[0], {
            "job": where[0], "occurrence": where[1], "attempt": body.get("attempt"),
            "end": body.get("end"), "tail": tail if isinstance(tail, str) else ""})

    # ------------------------------------------------------------------ views

    def suspension_json(self, row: JobRow) -> dict[str, Any] | None:
        by_spec = bool(row.spec is not None and row.spec.suspend)
        runtime = self.suspensions.get(row.name)
        if runtime is None and not by_spec:
            return None
        out: dict[str, Any] = runtime.to_json() if runtime is not None else {}
        out["by_spec"] = by_spec
        return out

    def last_run_json(self, name: str) -> dict[str, Any] | None:
        rec = self.last.get(name)
        if rec is None:
            return None
        d = run_json(rec)["duration"]
        return {"occurrence": rec.occurrence, "outcome": rec.status, "duration_s": d,
                "attempt": attempt_count(rec), "finished_at": unix_iso(rec.finished_at)}

    def job_json(self, row: JobRow, now: datetime) -> dict[str, Any]:
        """One job of the jobs list (and of a ``job`` event)."""
        suspension = self.suspension_json(row)
        spec = row.spec
        out: dict[str, Any] = {"name": row.name, "revision": row.revision,
                               "valid": spec is not None, "error": row.error or None,
                               "suspended": suspension is not None,
                               "reason": (suspension or {}).get("reason") or None,
                               "suspension": suspension,
                               "last_run": self.last_run_json(row.name),
                               "running": self.status_of(row.name) == "running"}
        if spec is None:
            out.update(schedule=None, timezone=None, concurrency=None, tags={},
                       next_fire=None)
            return out
        nxt = None if suspension is not None else row.next_fire(now)
        out.update(schedule=spec.schedule, timezone=spec.timezone,
                   concurrency=spec.concurrency, tags=dict(spec.tags), next_fire=iso(nxt))
        return out

    def running(self, now: datetime) -> list[RunRecord]:
        """Runs going now: active records whose instant has come (a claim made ahead of
        its instant waits for it, as in ``scheduler.admin.running``)."""
        return sorted((r for r in self.active.values()
                       if (occurrence_instant(r.occurrence) or now) <= now),
                      key=lambda r: (r.job, r.occurrence))

    def status_of(self, name: str) -> str:
        """A job's status for the jobs filter: ``running`` (its lock is held, or a run of
        it has started), its last finished run's outcome, or ``never``."""
        if name in self.locks:
            return "running"
        now = datetime.now(UTC)
        if any(j == name and (occurrence_instant(o) or now) <= now for j, o in self.active):
            return "running"
        last = self.last.get(name)
        return last.status if last is not None else "never"

    def _due(self, row: JobRow) -> datetime | None:
        """The first fire instant after the job's last finished run (or, before any, after
        the model first saw it)."""
        last = self.last.get(row.name)
        since = (occurrence_instant(last.occurrence) if last is not None else None) \
            or datetime.fromtimestamp(row.seen_at, UTC)
        return row.due_after(since)

    def overdue(self, row: JobRow, now: datetime, grace: float) -> datetime | None:
        """The instant a job was due at without a run recorded for it, more than ``grace``
        seconds ago; None if it is not overdue (or suspended, or invalid)."""
        if row.spec is None or self.suspension_json(row) is not None:
            return None
        due = self._due(row)
        if due is None or (now - due).total_seconds() <= grace:
            return None
        return due
