"""Scheduler workers in-process against a coord subprocess: skew, deadman, visibility.

* Fast jobs and clock skew: workers whose clocks are off by -2 s, 0 and +2 s run jobs that
  finish in milliseconds on a 1-second schedule; every occurrence starts once.
* Deadman: a worker cut off from the store (a TCP proxy drops its link) kills its running job
  within the session TTL; the occurrence is recorded ``lost`` and the next one runs on
  another worker, only once the first job is dead (the runs share a flock).
* ``raftcron locks -o json`` during a 5-second run shows who holds it; ``raftcron jobs
  history`` shows the run afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from coord.client import Client
from scheduler import keys
from scheduler.admin import apply_jobs
from scheduler.clock import SystemClock
from scheduler.plan import occurrence_id
from scheduler.spec import load_jobs_text
from scheduler.worker import Worker, WorkerConfig
from tests.helpers.procs import REPO, ProcessGroup, start_coord
from tests.helpers.proxy import Proxy

READY = 30.0
"""Seconds for a worker to load its view and be ready (it takes well under one)."""


async def until(cond: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def worker(name: str, endpoint: str, tmp: Path, offset: float = 0.0, ttl: int = 3) -> Worker:
    return Worker(WorkerConfig(name=name, endpoints=[endpoint], session_ttl=ttl,
                               log_dir=tmp / "logs" / name, clock=SystemClock(offset)))


async def apply_text(endpoint: str, text: str) -> None:
    async with Client([endpoint]) as c:
        await apply_jobs(c, load_jobs_text(text), prune=False, dry_run=False)


async def run_workers(workers: list[Worker], body: Callable[[], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        await body()
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def test_fast_jobs_with_skewed_clocks_start_once(procs: ProcessGroup, tmp_path: Path) -> None:
    coord = start_coord(procs)
    out = tmp_path / "starts.txt"
    jobs = "jobs:\n" + "".join(
        f"  - name: fast{i}\n    schedule: '* * * * * *'\n"
        f"    command: 'echo \"$RAFTCRON_JOB $RAFTCRON_OCCURRENCE\" >> {out}'\n"
        for i in range(4))

    async def main() -> None:
        await apply_text(coord.endpoint, jobs)
        ws = [worker(f"skew{o:+d}", coord.endpoint, tmp_path, float(o)) for o in (-2, 0, 2)]

        async def body() -> None:
            await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in ws)), READY)
            # The scenario is 12 s of schedule: the occurrences due in that window, each
            # waited for until its run record is final (started and finished, or recorded).
            first = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
            window = [occurrence_id(first + timedelta(seconds=k)) for k in range(12)]

            async with Client([coord.endpoint]) as c:
                async def settled() -> bool:
                    recs = [json.loads(kv.value)
                            for kv in (await c.get(keys.RUNS, prefix=True)).kvs]
                    final = {(r["job"], r["occurrence"]) for r in recs
                             if r["status"] not in ("claimed", "running", "retrying")}
                    return all((f"fast{i}", occ) in final for i in range(4) for occ in window)
                await until(settled, 12 + 30, "every occurrence of the 12 s window to settle")
        await run_workers(ws, body)
    asyncio.run(main())
    starts = Counter(tuple(line.split()) for line in out.read_text().splitlines())
    dupes = [k for k, n in starts.items() if n > 1]
    assert not dupes, f"started more than once: {dupes[:10]}"
    per_job = Counter(job for job, _ in starts)
    # 12 s of a 1-second schedule with 4 jobs: each ran (nearly) every second.
    assert all(n >= 9 for n in per_job.values()), per_job


def test_a_worker_started_behind_a_claim_made_ahead_still_fires_from_its_start(
        procs: ProcessGroup, tmp_path: Path) -> None:
    """A worker whose clock is 4 s ahead claims the job's occurrences from its own now;
    a worker with a true clock started after that first claim must fire what falls due
    from its own start on — before, it began the job's timeline after the newest record
    (as a restart does), and the occurrences due between its start and that record were
    nobody's: never run, never recorded (a full run of the skewed-clocks test above)."""
    coord = start_coord(procs)
    out = tmp_path / "starts.txt"
    jobs = (f"jobs:\n  - name: fast\n    schedule: '* * * * * *'\n"
            f"    command: 'echo \"$RAFTCRON_OCCURRENCE\" >> {out}'\n")

    async def main() -> None:
        await apply_text(coord.endpoint, jobs)
        ahead = worker("ahead", coord.endpoint, tmp_path, 4.0)
        behind = worker("behind", coord.endpoint, tmp_path)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(ahead.run(stop))]
        try:
            async with Client([coord.endpoint]) as c:
                async def recorded() -> set[str]:
                    r = await c.get(keys.runs_prefix("fast"), prefix=True)
                    return {json.loads(kv.value)["occurrence"] for kv in r.kvs}

                async def claimed_ahead() -> bool:
                    return any(o > occurrence_id(datetime.now(UTC) + timedelta(seconds=1))
                               for o in await recorded())
                await until(claimed_ahead, READY, "the worker ahead to claim ahead")
                first = min(await recorded())
                tasks.append(asyncio.create_task(behind.run(stop)))
                await asyncio.wait_for(behind.ready.wait(), READY)
                since = datetime.now(UTC)  # the worker behind saw the job before this
                window = [occurrence_id(since.replace(microsecond=0) + timedelta(seconds=k))
                          for k in range(1, 4)]
                window = [o for o in window if o < first]
                print(f"first claim ahead {first}; due after the start behind: {window}")
                assert window, "the worker behind took too long to start (no case)"

                async def settled() -> bool:
                    return set(window) <= await recorded()
                await until(settled, 15, f"records of {window}")
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    asyncio.run(main())


def test_deadman_kills_cut_off_worker_job_and_run_is_lost(procs: ProcessGroup,
                                                         tmp_path: Path) -> None:
    coord = start_coord(procs)
    pids = tmp_path / "pids"
    pids.mkdir()
    ttl = 3
    # Each run first takes an exclusive flock on one file, held by its process until it
    # dies (the kernel drops it then, however it dies); a run that cannot take it at once
    # records that it overlapped another and exits. So w2's run starting at all, lock
    # taken, proves that w1's run was dead by then: no timing guess.
    held = tmp_path / "job.flock"
    overlap = tmp_path / "overlap"
    jobs = (f"jobs:\n  - name: long\n    schedule: '*/4 * * * * *'\n"
            f"    command: 'exec 9>>{held}; if flock -n 9; then "
            f"echo $$ > {pids}/$RAFTCRON_OCCURRENCE.$WHO; exec sleep 60; "
            f"else echo $RAFTCRON_OCCURRENCE.$WHO >> {overlap}; exit 1; fi'\n"
            f"    inherit_env: [PATH, WHO]\n"
            f"    starting_deadline: 30s\n")

    async def main() -> None:
        await apply_text(coord.endpoint, jobs)
        proxy = Proxy("127.0.0.1", coord.client_port)
        await proxy.start()
        os.environ["WHO"] = "w1"
        w1 = worker("w1", proxy.endpoint, tmp_path, ttl=ttl)
        stop = asyncio.Event()
        t1 = asyncio.create_task(w1.run(stop))

        async def started_on(who: str) -> list[Path]:
            # A pid file exists from the shell's `>` before `echo` has written to it.
            return sorted(p for p in pids.glob(f"*.{who}") if p.read_text().strip())
        await until(lambda: _nonempty(started_on("w1")), 15, "the job to start on w1")
        first = (await started_on("w1"))[0]
        pid = int(first.read_text())
        occurrence = first.name.rsplit(".", 1)[0]
        os.environ["WHO"] = "w2"
        w2 = worker("w2", coord.endpoint, tmp_path, ttl=ttl)
        t2 = asyncio.create_task(w2.run(stop))
        await asyncio.wait_for(w2.ready.wait(), READY)
        cut_at = time.monotonic()
        proxy.cut()
        await until(lambda: _dead(pid), ttl + 2, f"w1's job (pid {pid}) to be killed")
        killed_after = time.monotonic() - cut_at
        assert killed_after <= ttl + 0.5, f"deadman took {killed_after:.1f}s (TTL {ttl}s)"

        async def recorded_lost() -> bool:
            async with Client([coord.endpoint]) as c:
                kv = await c.get_one(keys.run_key("long", occurrence))
            return kv is not None and json.loads(kv.value)["status"] == "lost"
        await until(recorded_lost, 20, "the run to be recorded lost")
        await until(lambda: _nonempty(started_on("w2")), 20, "the next occurrence on w2")
        assert not overlap.exists(), (
            f"a run started while w1's job still held its lock: {overlap.read_text()}")
        second = (await started_on("w2"))[0].name.rsplit(".", 1)[0]
        assert second > occurrence, (occurrence, second)
        stop.set()
        await proxy.close()
        await asyncio.gather(t1, t2)
    asyncio.run(main())


def test_locks_shows_holder_during_run_and_history_after(procs: ProcessGroup,
                                                         tmp_path: Path) -> None:
    coord = start_coord(procs)
    marker = tmp_path / "started"
    jobs = (f"jobs:\n  - name: five\n    schedule: '*/2 * * * * *'\n"
            f"    command: 'touch {marker}; sleep 5'\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def cli(*args: str) -> str:
        res = subprocess.run([sys.executable, "-m", "scheduler.cli", *args, "--endpoints",
                              coord.endpoint], capture_output=True, text=True, env=env,
                             check=False, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout

    async def main() -> None:
        await apply_text(coord.endpoint, jobs)
        w = worker("holder", coord.endpoint, tmp_path, ttl=10)

        async def body() -> None:
            await until(lambda: _exists(marker), 15, "the 5-second job to start")
            held = json.loads(await asyncio.to_thread(cli, "locks", "-o", "json"))
            assert len(held) == 1, held
            lock = held[0]
            assert lock["job"] == "five" and lock["worker"] == "holder"
            assert lock["pid"] == os.getpid() and lock["host"]
            assert 0 < lock["ttl"] <= 10 and lock["fencing_token"] > 0
            occurrence = lock["occurrence"]

            async def finished() -> bool:
                rows = json.loads(await asyncio.to_thread(cli, "jobs", "history", "five",
                                                          "-o", "json"))
                return any(r["occurrence"] == occurrence and r["status"] == "succeeded"
                           and r["fencing_token"] == lock["fencing_token"] for r in rows)
            await until(finished, 15, "the run in jobs history")
        await run_workers([w], body)
    asyncio.run(main())


async def _nonempty(coro: Awaitable[list[Path]]) -> bool:
    return bool(await coro)


async def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); treat it as dead if its state says so.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


async def _exists(path: Path) -> bool:
    return path.exists()
