"""Workers kill what they start: a cancelled start, a finished job's group, a graceful
stop, a cancelled run, a kill request that arrives while the run is being started.

Workers run in-process with short TTLs against a coord subprocess, as in
``test_worker_lost.py``. Each test sets up the scenario and checks what a user would see
(run records, job processes):

* a start cancelled twice still kills what it spawned; the group of a finished job is
  signalled while its main process is a zombie;
* a graceful stop kills a run that the sweep re-ran; a cancelled run kills its process;
* a kill request that arrives while the `running` mark is written stops the run from
  starting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from coord.client import Client
from scheduler import admin, executor, keys
from scheduler.claim import ClaimStore, Identity
from scheduler.executor import JobProcess, RunRequest
from scheduler.plan import occurrence_id
from scheduler.worker import Worker, WorkerConfig
from tests.helpers.procs import ProcessGroup, start_coord
from tests.scheduler.test_worker_faults import _dead, apply_text, until
from tests.scheduler.worker_util import _reaped, _start, _status, _true, _worker

# ---------------------------------------------------------------- executor

def _has_pid(path: Path) -> bool:
    """The job wrote its pid (the file exists from the shell's `>` before `echo` writes)."""
    return path.exists() and path.read_text().strip() != ""

def test_start_cancelled_twice_still_kills_what_it_spawned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both cancellations land while the spawn thread is held (a slow filesystem while the
    log file is created): the first while the start awaits the spawn, the second once the
    start has handled the first. Only then is the spawn let through."""
    spawned: list[int] = []
    real_spawn = executor._spawn
    entered, release = threading.Event(), threading.Event()

    def slow_spawn(*args: Any) -> Any:
        entered.set()
        release.wait(30)
        proc, out, offset = real_spawn(*args)
        spawned.append(proc.pid)
        return proc, out, offset
    monkeypatch.setattr(executor, "_spawn", slow_spawn)

    async def main() -> None:
        req = RunRequest(job="j", occurrence="o", run_id="r", fencing_token=1, attempt=1,
                         command=("sleep", "30"))
        p = JobProcess(req, log_path=tmp_path / "j.log")
        t = asyncio.create_task(p.start())
        try:
            await until(lambda: _true(entered.is_set()), 10, "the spawn thread to be under way")
            t.cancel()
            # A few loop turns (not time): the start handles the first cancellation; the
            # spawn is still held, so the start cannot have got past it.
            for _ in range(5):
                await asyncio.sleep(0)
            assert not spawned
            t.cancel()
        finally:
            release.set()
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


# ---------------------------------------------------------------- stop
def test_graceful_stop_kills_a_run_the_sweep_reran(procs: ProcessGroup, tmp_path: Path) -> None:
    coord = start_coord(procs)
    pidf = tmp_path / "pid"

    async def main() -> None:
        await apply_text(coord.endpoint,
                         "jobs:\n  - name: j\n    schedule: '0 0 1 1 *'\n"
                         f"    command: 'echo $$ > {pidf}.tmp; mv {pidf}.tmp {pidf}; "
                         "exec sleep 30'\n    on_lost: rerun\n")
        async with Client([coord.endpoint]) as c:
            ghost = await c.grant(30)
            occ = occurrence_id(datetime.now(UTC))
            assert await ClaimStore(c, Identity("ghost", ghost.id)).claim("j", occ,
                                                                           exclusive=True)
            await c.revoke(ghost.id)  # its lock goes before any worker watches
            w = Worker(WorkerConfig(name="w1", endpoints=[coord.endpoint], session_ttl=3,
                                    log_dir=tmp_path / "logs", sweep_interval=1.0,
                                    stop_timeout=2))
            stop, tasks = await _start([w])
            await until(lambda: _true(_has_pid(pidf)), 10, "the sweep to re-run the job")
            pid = int(pidf.read_text())
            stop.set()
            await asyncio.gather(*tasks)
            try:
                assert await _dead(pid), "the re-run job outlived the worker's graceful stop"
                assert await c.get_one(keys.lock_key("j")) is None
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    asyncio.run(main())


def test_a_cancelled_run_kills_its_process(procs: ProcessGroup, tmp_path: Path) -> None:
    coord = start_coord(procs)
    pidf = tmp_path / "pid"

    async def main() -> None:
        await apply_text(coord.endpoint,
                         "jobs:\n  - name: j\n    schedule: '0 0 1 1 *'\n"
                         f"    command: 'echo $$ > {pidf}.tmp; mv {pidf}.tmp {pidf}; "
                         "exec sleep 30'\n")
        w = _worker("w1", coord.endpoint, tmp_path)
        stop, tasks = await _start([w])
        try:
            assert w.store is not None
            claim = await w.store.claim("j", occurrence_id(datetime.now(UTC)), exclusive=True)
            assert claim is not None
            run = asyncio.create_task(w.runner.execute(w.jobs["j"], claim))
            await until(lambda: _true(_has_pid(pidf)), 10, "the job to start")
            pid = int(pidf.read_text())
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
            try:
                await until(lambda: _dead(pid), 5, "the cancelled run's process to die")
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    asyncio.run(main())


# ---------------------------------------------------------------- kill before start
def test_kill_request_while_the_running_mark_is_written_stops_the_start(
        procs: ProcessGroup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    coord = start_coord(procs)
    marker = tmp_path / "ran"
    workers: list[Worker] = []
    real_update = ClaimStore.update

    async def update_then_killed(self: ClaimStore, claim: Any, **changes: Any) -> bool:
        if changes.get("status") == "running":
            async with Client([coord.endpoint]) as c:
                await admin.kill(c, claim.job, None, "test: kill during the mark")

            async def seen() -> bool:
                run = workers[0].running.get((claim.job, claim.occurrence))
                return run is not None and run.kill_reason is not None
            await until(seen, 10, "the worker to see the kill request")
        return await real_update(self, claim, **changes)
    monkeypatch.setattr(ClaimStore, "update", update_then_killed)

    async def main() -> None:
        await apply_text(coord.endpoint,
                         "jobs:\n  - name: j\n    schedule: '0 0 1 1 *'\n"
                         f"    command: 'touch {marker}'\n    on_lost: rerun\n")
        workers.append(_worker("w1", coord.endpoint, tmp_path))
        stop, tasks = await _start(workers)
        try:
            async with Client([coord.endpoint]) as c:
                occ = await admin.trigger(c, "j")

                async def ended() -> bool:
                    return await _status(c, "j", occ) not in (None, "claimed", "running")
                await until(ended, 15, "the triggered run to end")
                assert await _status(c, "j", occ) == "killed"
                assert await c.get_one(keys.lock_key("j")) is None
            assert not marker.exists(), "the job started after it was killed"
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    asyncio.run(main())
