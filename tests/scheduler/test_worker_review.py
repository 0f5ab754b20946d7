"""Findings of the review of the lost-detection, batching, Popen and backup-timer commits.

Workers run in-process with short TTLs against a coord subprocess, as in
``test_worker_lost.py``. Each test sets up the scenario the review found and checks what a
user would see (run records, locks, job processes):

* a dead holder is recognised by its lease, not its name: a worker that restarted under the
  same name re-runs its own never-started run; a run found by the sweep of a non-eligible
  worker is re-run by an eligible one;
* a lock is never released while its run record is still active (finish write failed, run
  crashed, orphaned lock of a started run);
* a start cancelled twice still kills what it spawned; the group of a finished job is
  signalled while its main process is a zombie;
* a graceful stop kills a run that the sweep re-ran;
* a kill request that arrives while the `running` mark is written stops the run from
  starting;
* a backup still runs an occurrence after the job spec was edited;
* a claim failing with LeaseNotFound in a batch does not fail the other members.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from coord.client import Client
from scheduler import executor, keys
from scheduler.executor import JobProcess, RunRequest
from scheduler.worker import Worker, WorkerConfig
from tests.scheduler.test_worker_faults import _dead, until


def _worker(name: str, endpoint: str, tmp: Path, *, ttl: int = 3, sweep: float = 3600.0,
            tags: dict[str, str] | None = None, grace: float = 0.3) -> Worker:
    return Worker(WorkerConfig(name=name, endpoints=[endpoint], session_ttl=ttl,
                               log_dir=tmp / "logs" / name, sweep_interval=sweep,
                               tags=tags or {}, grace=grace))


async def _status(c: Client, job: str, occ: str) -> str | None:
    kv = await c.get_one(keys.run_key(job, occ))
    return None if kv is None else str(json.loads(kv.value)["status"])


async def _start(ws: list[Worker]) -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in ws]
    await asyncio.gather(*(w.ready.wait() for w in ws))
    return stop, tasks


async def _views_show(ws: list[Worker], names: set[str]) -> bool:
    return all(names <= set(w.workers) for w in ws)


# ---------------------------------------------------------------- executor (findings 3, 8)
def test_start_cancelled_twice_still_kills_what_it_spawned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: list[int] = []
    real_spawn = executor._spawn

    def slow_spawn(*args: Any) -> Any:  # a slow filesystem while the log file is created
        time.sleep(0.5)
        proc, out, offset = real_spawn(*args)
        spawned.append(proc.pid)
        return proc, out, offset
    monkeypatch.setattr(executor, "_spawn", slow_spawn)

    async def main() -> None:
        req = RunRequest(job="j", occurrence="o", run_id="r", fencing_token=1, attempt=1,
                         command=("sleep", "30"))
        p = JobProcess(req, log_path=tmp_path / "j.log")
        t = asyncio.create_task(p.start())
        await asyncio.sleep(0.1)  # the spawn thread is under way
        t.cancel()
        await asyncio.sleep(0.1)  # the start is now in its cleanup branch
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        await until(lambda: _true(bool(spawned)), 10, "the spawn thread to start the job")
        try:
            await until(lambda: _reaped(spawned[0]), 5, "the spawned job to be killed, reaped")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(spawned[0], signal.SIGKILL)
    asyncio.run(main())


def test_group_is_killed_while_the_main_process_is_a_zombie(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The group id is the main process's pid: once that is reaped the id may be reused,
    so leftovers are killed before the reap (and kill() after the exit does nothing)."""
    calls: list[tuple[int, bool]] = []
    real_killpg = os.killpg

    def spy(pgid: int, sig: int) -> None:
        calls.append((pgid, Path(f"/proc/{pgid}").exists()))
        real_killpg(pgid, sig)
    monkeypatch.setattr(os, "killpg", spy)
    child = tmp_path / "child"

    async def main() -> None:
        req = RunRequest(job="j", occurrence="o", run_id="r", fencing_token=1, attempt=1,
                         command=f"sleep 30 & echo $! > {child}; exit 0")
        p = JobProcess(req, log_path=tmp_path / "j.log")
        await p.start()
        result = await p.wait()
        assert result.exit_code == 0
        p.kill("too late")
        p.terminate("too late")
        await until(lambda: _dead(int(child.read_text())), 5, "the background child to die")
    asyncio.run(main())
    assert calls, "the group of the finished job was never signalled"
    assert all(present for _, present in calls), \
        f"the group was signalled after its leader was reaped: {calls}"


async def _true(value: bool) -> bool:
    return value


async def _reaped(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()
