"""A job never outlives its worker (promise 7), whatever mechanism ensures it: when the
process that started a job dies — by kill -9 too — the job's whole process group dies
within two seconds, grandchildren and SIGTERM-ignoring children included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.helpers.procs import REPO, wait_until

RUNNER = textwrap.dedent("""
    import asyncio, sys
    from scheduler.executor import JobProcess, RunRequest

    async def main():
        job = JobProcess(RunRequest(job="j", occurrence="o", run_id="r", fencing_token=1,
                                    attempt=1, command=sys.argv[1]))
        await job.start()
        print("PGID", job.pid, flush=True)
        await job.wait()

    asyncio.run(main())
""")

# A shell that forks: two background sleepers (one ignoring SIGTERM), then waits.
FORKING = "trap '' TERM; (trap '' TERM; sleep 300) & sleep 300 & wait"


def _group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid:
                stat = (entry / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":
                    pids.append(int(entry.name))
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    return pids


def test_kill_9_of_the_worker_kills_the_jobs_whole_group(tmp_path: Path) -> None:
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, FORKING], cwd=REPO,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert runner.stdout is not None
        line = ""
        while not line.startswith("PGID "):  # structlog's lines come first
            line = runner.stdout.readline()
            assert line, "the runner exited before starting its job"
        pgid = int(line.split()[1])
        wait_until(lambda: len(_group(pgid)) >= 3, 10, "the job's shell and its two sleepers")
        runner.send_signal(signal.SIGKILL)  # the worker alone, not its group
        runner.wait(timeout=10)
        t0 = time.monotonic()
        wait_until(lambda: not _group(pgid), 5, f"group {pgid} to die: {_group(pgid)}")
        assert time.monotonic() - t0 < 3.0  # a few seconds: unkilled, it would live on
    finally:
        if runner.poll() is None:
            runner.kill()
        runner.wait(timeout=10)
