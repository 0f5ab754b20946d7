"""Claims sent ahead of the instant (``WorkerConfig.claim_ahead``).

The first-ranked worker claims an occurrence before its instant so that the claim's round
trip is off the fire-lag path. What a user must still get: the process never starts before
the instant (a takeover of a lost claim included); a worker that stops meanwhile still runs
what it claimed; a claim of a job suspended meanwhile is handed back and never runs; a kill
request for the job spares a claim not yet due; ``concurrency: replace`` does not kill the
running occurrence before the next one is due.

Workers run in-process against a coord subprocess; jobs use 6-field cron schedules (seconds
first) so the instants are known.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from coord.client import Client
from scheduler import admin, keys
from scheduler.claim import LockHolder, RunRecord
from scheduler.plan import parse_occurrence_id
from scheduler.worker import Worker, WorkerConfig
from tests.helpers.observe import events_during
from tests.helpers.procs import ProcessGroup, start_coord
from tests.scheduler.test_worker_faults import READY, apply_text, until

QUIET = 3.0
"""Seconds a "nothing more happens" check watches the store for."""


def _worker(name: str, endpoint: str, tmp: Path, ahead: float) -> Worker:
    return Worker(WorkerConfig(name=name, endpoints=[endpoint], session_ttl=5,
                               log_dir=tmp / "logs" / name, sweep_interval=3600.0,
                               claim_ahead=ahead))


async def _records(c: Client, job: str) -> dict[str, RunRecord]:
    r = await c.get(keys.runs_prefix(job), prefix=True)
    return {rec.occurrence: rec for rec in (RunRecord.decode(kv.value) for kv in r.kvs)}


async def _claimed_ahead(c: Client, job: str, margin: float,
                         worker: str | None = None) -> tuple[str, datetime]:
    """Poll until a run record of ``job`` (claimed by ``worker``, if given) exists at least
    ``margin`` seconds before its instant; return (occurrence, instant)."""
    found: list[tuple[str, datetime]] = []

    async def seen() -> bool:
        now = datetime.now(UTC)
        for occ, rec in (await _records(c, job)).items():
            instant = parse_occurrence_id(occ)
            if (rec.status == "claimed" and worker in (None, rec.worker)
                    and (instant - now).total_seconds() >= margin):
                found.append((occ, instant))
        return bool(found)
    await until(seen, 90, f"a claim of {job} sent ahead of its instant")
    return found[0]


def _starts(marker: Path) -> dict[str, float]:
    """occurrence → the child's start time (epoch seconds), from the marker file."""
    if not marker.exists():
        return {}
    return {occ: float(t) for occ, t in (line.split() for line in marker.read_text().split("\n")
                                         if line)}


def _job(name: str, schedule: str, command: str, extra: str = "") -> str:
    return (f"jobs:\n  - name: {name}\n    schedule: '{schedule}'\n"
            f"    command: '{command}'\n{extra}")


def _echo_job(marker: Path, schedule: str = "*/10 * * * * *", extra: str = "") -> str:
    """Job ``j``, whose process appends its occurrence and start time to ``marker``."""
    return _job("j", schedule, f'echo "$RAFTCRON_OCCURRENCE $(date +%s.%N)" >> {marker}', extra)


@dataclass
class _Run:
    worker: Worker
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def stopped(self) -> None:
        self.stop.set()
        await self.task


@contextlib.asynccontextmanager
async def _running(endpoint: str, tmp: Path, *names: str,
                   ahead: float) -> AsyncIterator[dict[str, _Run]]:
    """Workers started in this order (each registered before the next starts); all stopped
    at the end."""
    runs: dict[str, _Run] = {}
    try:
        for name in names:
            w = _worker(name, endpoint, tmp, ahead)
            stop = asyncio.Event()
            runs[name] = _Run(w, stop, asyncio.create_task(w.run(stop)))
            await asyncio.wait_for(w.ready.wait(), READY)
        yield runs
    finally:
        for r in runs.values():
            r.stop.set()
        await asyncio.gather(*(r.task for r in runs.values()))


async def _until_status(c: Client, occ: str, status: str, timeout: float) -> None:
    async def reached() -> bool:
        rec = (await _records(c, "j")).get(occ)
        return rec is not None and rec.status == status
    await until(reached, timeout, f"{occ} to be {status}")


def test_a_claim_sent_ahead_starts_its_process_at_the_instant(
        procs: ProcessGroup, tmp_path: Path) -> None:
    coord = start_coord(procs)
    marker = tmp_path / "starts"

    async def main() -> None:
        await apply_text(coord.endpoint, _echo_job(marker, "*/3 * * * * *"))
        async with (Client([coord.endpoint]) as c,
                    _running(coord.endpoint, tmp_path, "w1", ahead=1.5) as runs):
            occs = [await _claimed_ahead(c, "j", margin=0.5) for _ in range(2)]
            for occ, _ in occs:
                await _until_status(c, occ, "succeeded", 10)
        starts = _starts(marker)
        for occ, instant in occs:
            assert starts[occ] >= instant.timestamp(), (occ, starts[occ], instant)
            # on time: before the next instant (a start a period late is not), with no
            # bound under a few seconds on a loaded 2-core machine
            assert starts[occ] - instant.timestamp() < 3.0
        store = runs["w1"].worker.store
        assert store is not None and store.txns == len(starts)  # one claim txn each
    asyncio.run(main())


def test_a_stopping_worker_starts_what_it_claimed_ahead_then_stops(
        procs: ProcessGroup, tmp_path: Path) -> None:
    """A worker told to stop while a claim it sent ahead waits for its instant runs that
    occurrence at the instant and stops once it is done, like any run it had; a live backup
    does not run it too, and no lock is left behind."""
    coord = start_coord(procs)
    marker = tmp_path / "starts"

    async def main() -> None:
        await apply_text(coord.endpoint, _echo_job(marker))
        async with (Client([coord.endpoint]) as c,
                    _running(coord.endpoint, tmp_path, "w2", "w1", ahead=6.0) as runs):
            occ, instant = await _claimed_ahead(c, "j", margin=2.5, worker="w1")

            async def backup_saw_lock() -> bool:  # w2, a live backup, knows it is taken
                raw = runs["w2"].worker.ctx.held.get("j")
                return raw is not None and LockHolder.decode(raw).occurrence == occ
            await until(backup_saw_lock, 10, "w2 to see w1's lock on the locks watch")
            await runs["w1"].stopped()
            assert datetime.now(UTC) >= instant
            got = await c.get(keys.run_key("j", occ))
            rec = RunRecord.decode(got.kvs[0].value)
            assert (rec.status, rec.worker) == ("succeeded", "w1")
            assert await c.get_one(keys.lock_key("j")) is None
            # Nothing more happens to the occurrence: observed for QUIET s, well past every
            # backup's turn (grace 0.3 s per rank), while w2 goes on running the job.
            later = await events_during(c, keys.run_key("j", occ), QUIET,
                                        start_revision=got.header.revision + 1)
            assert later == [], f"{occ} was written again after it finished: {later}"
        starts = [line.split()[0] for line in marker.read_text().splitlines()]
        assert starts.count(occ) == 1
        assert _starts(marker)[occ] >= instant.timestamp()
    asyncio.run(main())


def test_a_kill_request_for_the_job_spares_a_claim_waiting_for_its_instant(
        procs: ProcessGroup, tmp_path: Path) -> None:
    """``raftcron jobs kill j`` (no occurrence) kills the job's runs; a claim sent ahead
    for the next occurrence is not a run yet and still starts at its instant."""
    coord = start_coord(procs)

    async def main() -> None:
        await apply_text(coord.endpoint, _echo_job(tmp_path / "starts"))
        async with (Client([coord.endpoint]) as c,
                    _running(coord.endpoint, tmp_path, "w1", ahead=6.0)):
            occ, _ = await _claimed_ahead(c, "j", margin=2.5)
            # `jobs kill` itself refuses when nothing runs (the claim is not a run yet);
            # the request as it reaches the workers when a run ended meanwhile:
            with pytest.raises(admin.AdminError, match="nothing to kill"):
                await admin.kill(c, "j", None, "test")
            grant = await c.grant(10)
            await c.put(keys.killer_key("j"), json.dumps({"occurrence": None,
                                                          "reason": "test"}), lease=grant.id)

            async def done() -> bool:
                rec = (await _records(c, "j")).get(occ)
                return rec is not None and rec.status not in ("claimed", "running")
            await until(done, 15, f"{occ} to end")
            assert (await _records(c, "j"))[occ].status == "succeeded"
    asyncio.run(main())


def test_an_on_lost_rerun_takeover_of_a_claim_sent_ahead_waits_for_the_instant(
        procs: ProcessGroup, tmp_path: Path) -> None:
    """The claimant's session ends while its claim, sent ahead, waits (the test revokes
    it; in life a lease that expires right after the claim). The run is marked lost before
    it started and, with ``on_lost: rerun``, taken over by another worker, which also
    starts it no earlier than the instant. (Found by review.)"""
    coord = start_coord(procs)
    marker = tmp_path / "starts"

    async def main() -> None:
        await apply_text(coord.endpoint, _echo_job(marker, extra="    on_lost: rerun\n"))
        async with (Client([coord.endpoint]) as c,
                    _running(coord.endpoint, tmp_path, "w2", "w1", ahead=6.0)):
            occ, instant = await _claimed_ahead(c, "j", margin=3.0, worker="w1")
            await c.revoke((await _records(c, "j"))[occ].lease)
            await _until_status(c, occ, "succeeded",
                                (instant - datetime.now(UTC)).total_seconds() + 5)
        started = _starts(marker)[occ]
        assert started >= instant.timestamp(), (
            f"{occ} started {instant.timestamp() - started:.2f}s before its instant")
    asyncio.run(main())


def test_a_claim_sent_ahead_of_a_job_suspended_meanwhile_never_starts(
        procs: ProcessGroup, tmp_path: Path) -> None:
    coord = start_coord(procs)
    marker = tmp_path / "starts"

    async def main() -> None:
        await apply_text(coord.endpoint, _echo_job(marker))
        async with (Client([coord.endpoint]) as c,
                    _running(coord.endpoint, tmp_path, "w1", ahead=6.0)):
            occ, instant = await _claimed_ahead(c, "j", margin=2.5)
            assert await admin.set_suspended(c, "j", True)

            seen_at: list[int] = []

            async def handed_back() -> bool:
                got = await c.get(keys.run_key("j", occ))
                seen_at.append(got.header.revision)
                return not got.kvs
            await until(handed_back, 10, "the claim to be handed back")
            assert await c.get_one(keys.lock_key("j")) is None
            # Past the instant (by QUIET s): the occurrence is never claimed again, the job
            # never locked, observed on the store's event stream from the read above.
            span = (instant - datetime.now(UTC)).total_seconds() + QUIET
            later, locked = await asyncio.gather(*(
                events_during(c, key, span, start_revision=seen_at[-1] + 1)
                for key in (keys.run_key("j", occ), keys.lock_key("j"))))
            assert later == [], f"{occ} was claimed after it was handed back: {later}"
            assert locked == [], f"the suspended job was locked: {locked}"
        assert occ not in _starts(marker)
    asyncio.run(main())


def test_replace_does_not_kill_the_running_occurrence_before_the_next_instant(
        procs: ProcessGroup, tmp_path: Path) -> None:
    coord = start_coord(procs)

    async def main() -> None:
        await apply_text(coord.endpoint, _job("j", "*/4 * * * * *", "sleep 30",
                                              "    concurrency: replace\n"))
        recs: dict[str, RunRecord] = {}
        async with (Client([coord.endpoint]) as c,
                    _running(coord.endpoint, tmp_path, "w1", ahead=2.5)):
            async def replaced() -> bool:
                # the killed run's record is written before its successor's claim (which
                # waited for the lock to be freed) writes the successor's
                recs.update(await _records(c, "j"))
                killed = [o for o, r in recs.items() if r.status == "killed"]
                return bool(killed) and max(recs) > min(killed)
            await until(replaced, 15, "a run to be replaced and its successor to start")
        killed = next(r for r in recs.values() if r.status == "killed")
        successor = next(o for o in sorted(recs) if o > killed.occurrence)
        assert "replaced by occurrence" in killed.note, killed.note
        # Killed at the successor's instant (when its claim, sent ahead, found the lock
        # busy), not when that claim was sent.
        assert killed.finished_at >= parse_occurrence_id(successor).timestamp(), (
            killed.finished_at, successor)
    asyncio.run(main())
