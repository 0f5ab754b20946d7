"""Lost runs are found without a store read per finished run; the sweep and the history
pruning work in bulk. Workers run in-process against a coord subprocess.

* A holder cut off from the store: the other worker marks its run ``lost`` from the lock
  deletion alone (the periodic sweep is switched off), within the session TTL and a little.
* Normal finishes never make a worker read or write the run record to look for a lost run.
* The sweep marks an active record whose claimant's lease is gone ``lost`` and leaves one
  whose claimant is alive.
* Pruning keeps ``history_limit`` records and never deletes an active one.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from coord.client import Client
from scheduler import keys
from scheduler.claim import ClaimStore, RunRecord
from scheduler.plan import occurrence_id
from scheduler.spec import load_jobs_text
from scheduler.worker import Worker, WorkerConfig
from tests.helpers.procs import ProcessGroup, start_coord
from tests.helpers.proxy import Proxy
from tests.scheduler.test_worker_faults import (
    READY,
    _dead,
    _nonempty,
    apply_text,
    run_workers,
    until,
)


def worker(name: str, endpoint: str, tmp: Path, ttl: int = 3, sweep: float = 3600.0) -> Worker:
    return Worker(WorkerConfig(name=name, endpoints=[endpoint], session_ttl=ttl,
                               log_dir=tmp / "logs" / name, sweep_interval=sweep))


def test_lost_run_found_from_the_lock_deletion_alone(procs: ProcessGroup,
                                                     tmp_path: Path) -> None:
    coord = start_coord(procs)
    pids = tmp_path / "pids"
    pids.mkdir()
    ttl = 3
    jobs = (f"jobs:\n  - name: long\n    schedule: '*/4 * * * * *'\n"
            f"    command: 'echo $$ > {pids}/$RAFTCRON_OCCURRENCE; exec sleep 60'\n"
            f"    tags: {{role: a}}\n")

    async def main() -> None:
        await apply_text(coord.endpoint, jobs)
        proxy = Proxy("127.0.0.1", coord.client_port)
        await proxy.start()
        w1 = Worker(WorkerConfig(name="w1", endpoints=[proxy.endpoint], session_ttl=ttl,
                                 log_dir=tmp_path / "logs" / "w1", tags={"role": "a"},
                                 sweep_interval=3600.0))
        # w2 cannot run the job (tags), so it never claims it; it only watches the lock.
        w2 = worker("w2", coord.endpoint, tmp_path, ttl=ttl)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(w.run(stop)) for w in (w1, w2)]

        async def started() -> list[Path]:
            # A pid file exists from the shell's `>` before `echo` has written to it.
            return sorted(p for p in pids.iterdir() if p.read_text().strip())
        await until(lambda: _nonempty(started()), 15, "the job to start on w1")
        first = (await started())[0]
        occurrence, pid = first.name, int(first.read_text())
        await asyncio.wait_for(w2.ready.wait(), READY)
        cut_at = time.monotonic()
        proxy.cut()
        await until(lambda: _dead(pid), ttl + 2, "w1's job to be killed (deadman)")

        async def recorded_lost() -> bool:
            async with Client([coord.endpoint]) as c:
                kv = await c.get_one(keys.run_key("long", occurrence))
            return kv is not None and json.loads(kv.value)["status"] == "lost"
        # The server expires w1's lease after the TTL; w2 sees the lock and w1's worker key
        # go and marks the run lost at once (no sweep: it runs every hour here).
        await until(recorded_lost, ttl + 4, "the run to be recorded lost by w2")
        assert time.monotonic() - cut_at < ttl + 5
        stop.set()
        await proxy.close()
        await asyncio.gather(*tasks)
    asyncio.run(main())


def test_normal_finishes_cost_no_lost_check(procs: ProcessGroup, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    coord = start_coord(procs)
    out = tmp_path / "starts.txt"
    jobs = "jobs:\n" + "".join(
        f"  - name: quick{i}\n    schedule: '* * * * * *'\n"
        f"    command: 'echo $RAFTCRON_JOB >> {out}'\n" for i in range(4))
    checks: list[tuple[str, str]] = []
    real_mark_lost = ClaimStore.mark_lost

    async def counting_mark_lost(self: ClaimStore, job: str, occurrence: str,
                                 *args: Any, **kw: Any) -> RunRecord | None:
        checks.append((job, occurrence))
        return await real_mark_lost(self, job, occurrence, *args, **kw)
    monkeypatch.setattr(ClaimStore, "mark_lost", counting_mark_lost)

    async def main() -> None:
        await apply_text(coord.endpoint, jobs)
        ws = [worker(f"n{i}", coord.endpoint, tmp_path, ttl=5) for i in range(3)]

        async def body() -> None:
            await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in ws)), READY)

            async def enough() -> bool:
                return out.exists() and len(out.read_text().splitlines()) >= 20
            await until(enough, 30, "20 quick runs")
            # Settle the parked deletions (one workers read per round).
            await until(lambda: _all_settled(ws), 10, "parked lock deletions to settle")
        await run_workers(ws, body)
    asyncio.run(main())
    assert checks == [], f"normal finishes were checked for loss: {checks[:5]}"


async def _all_settled(ws: list[Worker]) -> bool:
    return all(not w.reaper.unsure for w in ws)


def _record(job: str, occ: str, status: str, lease: int) -> bytes:
    return RunRecord(job=job, occurrence=occ, status=status, worker="gone", run_id=f"r-{occ}",
                     lease=lease, claimed_at=time.time()).encode()


def test_sweep_marks_runs_of_expired_sessions_lost(procs: ProcessGroup, tmp_path: Path) -> None:
    coord = start_coord(procs)

    async def main() -> None:
        await apply_text(coord.endpoint,
                         "jobs:\n  - name: s\n    schedule: '@yearly'\n    command: 'true'\n")
        w = worker("sweeper", coord.endpoint, tmp_path)
        stop = asyncio.Event()
        task = asyncio.create_task(w.run(stop))
        await asyncio.wait_for(w.ready.wait(), READY)
        async with Client([coord.endpoint]) as c:
            dead = await c.grant(60)
            await c.revoke(dead.id)
            live = await c.grant(60)
            await c.put(keys.run_key("s", "20260101T000000Z"), _record(
                "s", "20260101T000000Z", "running", dead.id))
            await c.put(keys.run_key("s", "20260101T000001Z"), _record(
                "s", "20260101T000001Z", "running", live.id))
            await c.put(keys.run_key("s", "20260101T000002Z"), _record(
                "s", "20260101T000002Z", "succeeded", dead.id))
            await w.reaper.sweep_runs()
            status = {keys.name_from(kv.key, keys.runs_prefix("s")):
                      json.loads(kv.value)["status"]
                      for kv in (await c.get(keys.runs_prefix("s"), prefix=True)).kvs}
        stop.set()
        await task
        assert status == {"20260101T000000Z": "lost", "20260101T000001Z": "running",
                          "20260101T000002Z": "succeeded"}
    asyncio.run(main())


def test_prune_keeps_history_limit_and_active_runs(procs: ProcessGroup, tmp_path: Path) -> None:
    coord = start_coord(procs)

    async def main() -> None:
        text = "jobs:\n  - name: p\n    schedule: '@yearly'\n    command: 'true'\n" \
               "    history_limit: 5\n"
        await apply_text(coord.endpoint, text)
        spec = load_jobs_text(text)[0]
        w = worker("pruner", coord.endpoint, tmp_path)
        stop = asyncio.Event()
        task = asyncio.create_task(w.run(stop))
        await asyncio.wait_for(w.ready.wait(), READY)
        old = datetime.now(UTC) - timedelta(days=1)
        occs = [occurrence_id(old + timedelta(minutes=i)) for i in range(12)]
        (tmp_path / "logs" / "pruner" / "p").mkdir(parents=True)
        async with Client([coord.endpoint]) as c:
            for i, occ in enumerate(occs):
                status = "running" if i == 1 else "succeeded"
                await c.put(keys.run_key("p", occ), _record("p", occ, status, 0))
                (tmp_path / "logs" / "pruner" / "p" / f"{occ}.1.log").write_text("x")
            await w.keeper.prune(spec)
            left = [keys.name_from(kv.key, keys.runs_prefix("p"))
                    for kv in (await c.get(keys.runs_prefix("p"), prefix=True)).kvs]
        stop.set()
        await task
        # 12 records, limit 5: the 7 oldest go, except the active one (the 2nd).
        assert left == [occs[1], *occs[7:]]
        logs = sorted(p.name for p in (tmp_path / "logs" / "pruner" / "p").iterdir())
        assert logs == sorted(f"{o}.1.log" for o in left)
    asyncio.run(main())
