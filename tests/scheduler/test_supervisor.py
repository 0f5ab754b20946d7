"""A job never outlives its worker (promise 7): the per-process supervisor.

A child Python process stands in for a worker: it starts one job with the executor — a
shell that forks a background child, a child that ignores SIGTERM and one that left the
group with ``setsid`` — then it is killed with ``kill -9``. Every process of the job must be
gone within a couple of seconds, found by pid and by process group in ``/proc``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scheduler import supervisor
from tests.helpers.procs import REPO, pid_alive, wait_until

CHILD = """
import asyncio, sys
from scheduler.executor import RunRequest, run_job
req = RunRequest(job="orphan", occurrence="20261122T013000Z", run_id="r", fencing_token=1,
                 attempt=1, command=sys.argv[1])
asyncio.run(run_job(req))
"""

# The job records every pid it starts, then waits: a plain background child, one that
# ignores SIGTERM (so only SIGKILL ends it) and one in a session of its own.
JOB = ("echo $$ >> {pids}; sleep 300 & echo $! >> {pids}; "
       "(trap '' TERM; exec sleep 301) & echo $! >> {pids}; "
       "setsid sleep 302 & echo $! >> {pids}; echo ready >> {pids}; wait")


alive = pid_alive


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(name))
    return out


def start_worker_stand_in(tmp_path: Path) -> tuple[subprocess.Popen[bytes], list[int]]:
    pids_file = tmp_path / "pids"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, JOB.format(pids=pids_file)],
        env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: pids_file.exists() and "ready" in pids_file.read_text(), 30,
                   "the job to start its children")
    except TimeoutError:
        child.kill()
        child.wait()
        raise
    pids = [int(x) for x in pids_file.read_text().split() if x.isdigit()]
    assert len(pids) == 4
    return child, pids


@pytest.mark.parametrize("how", ["kill -9", "exit"])
def test_job_processes_die_with_their_worker(tmp_path: Path, how: str) -> None:
    child, pids = start_worker_stand_in(tmp_path)
    job = pids[0]  # the shell: the leader of the job's process group
    try:
        assert all(alive(p) for p in pids)
        assert set(group_members(job)) >= {job, pids[1], pids[2]}
        t0 = time.monotonic()
        if how == "kill -9":
            child.send_signal(signal.SIGKILL)
        else:
            # An exit the worker did not get to clean up after (no finally, no atexit).
            child.send_signal(signal.SIGTERM)
        child.wait(timeout=10)
        wait_until(lambda: not any(alive(p) for p in pids) and not group_members(job), 10,
                   "the job's processes to die")
        took = time.monotonic() - t0
        # SIGTERM, 0.25 s of grace, SIGKILL for the one that ignores SIGTERM; bounded by
        # a few seconds (a loaded machine), where nobody killing them means never.
        assert took < 3.0, f"the job outlived its worker by {took:.2f}s"
    finally:
        for p in pids:
            if alive(p):
                os.kill(p, signal.SIGKILL)


def test_supervisor_is_restarted_and_reaps_by_token(tmp_path: Path) -> None:
    """The worker side: ensure() starts one supervisor per process, restarts it when it is
    gone (same token), and a SIGTERM to it reaps the marked processes at once."""
    token = supervisor.ensure()
    first = supervisor.supervisor_pid()
    assert first is not None and alive(first)
    assert supervisor.ensure() == token and supervisor.supervisor_pid() == first
    marked = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 300 & wait"],
                              env={"PATH": os.environ["PATH"], supervisor.TOKEN_ENV: token},
                              start_new_session=True)
    try:
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: not alive(first), 10, "the supervisor to die")
        assert supervisor.ensure() == token

        def restarted() -> bool:  # ensure() notices the death once the child is reapable
            supervisor.ensure()
            return supervisor.supervisor_pid() not in (None, first)
        wait_until(restarted, 10, "ensure() to start a new supervisor")
        second = supervisor.supervisor_pid()
        assert second is not None
        assert marked.poll() is None
        # Wait until the new supervisor is up (it reads its pipe), then ask it to reap.
        wait_until(lambda: "scheduler.supervisor" in Path(f"/proc/{second}/cmdline")
                   .read_bytes().decode(errors="replace"), 30, "the supervisor to start")
        wait_until(lambda: _threads(second) >= 2, 30, "the supervisor to watch its pipe")
        os.kill(second, signal.SIGTERM)
        assert marked.wait(timeout=10) == -signal.SIGKILL  # it ignored SIGTERM
        wait_until(lambda: not group_members(marked.pid), 10, "the background sleep to die")
        # A reaping supervisor kills whatever carries this process's token until it exits:
        # let it finish before later tests start jobs here.
        wait_until(lambda: not alive(second), 15, "the reaping supervisor to exit")
    finally:
        if marked.poll() is None:
            os.killpg(marked.pid, signal.SIGKILL)
            marked.wait()


def _threads(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
