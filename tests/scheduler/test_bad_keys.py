"""Hostile keys under ``/cron/`` (issue 15, items 4-6): whatever anyone writes there, a
running agent keeps running its good jobs, logs each bad key once and skips it, and the same
holds for an agent started afterwards; ``raftcron jobs list`` still answers.

The bad values are put with the real client into a running agent's store, as an attacker
with write access would.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from coord.client import Client
from scheduler.plan import occurrence_id
from scheduler.spec import load_jobs
from tests.helpers.procs import ProcessGroup, wait_until
from tests.scheduler.test_agent import ENV, start_agent


def _spec(name: str, command: str) -> str:
    return json.dumps({"name": name, "schedule": "@every 1s", "command": command})


def _put_all(endpoint: str, items: list[tuple[bytes, bytes]]) -> None:
    async def body() -> None:
        async with Client([endpoint], timeout=5) as c:
            for k, v in items:
                await c.put(k, v)
    asyncio.run(body())


def _runs(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def test_bad_keys_never_blind_a_worker(procs: ProcessGroup) -> None:
    good = procs.workdir / "good.txt"
    ghost = procs.workdir / "ghost.txt"
    jobs = procs.workdir / "jobs.yaml"
    jobs.write_text("jobs:\n  - name: good\n    schedule: '@every 1s'\n"
                    f"    command: 'echo $RAFTCRON_OCCURRENCE >> {good}'\n")
    data = str(procs.workdir / "data")
    agent = start_agent(procs, "a1", "--jobs", str(jobs), "--data-dir", data)
    wait_until(lambda: _runs(good) >= 2, 60, "the good job to run\n" + agent.log(), step=0.2)

    occ = occurrence_id(datetime.now(UTC).replace(microsecond=0))
    # A garbage run record at an occurrence still to come: that occurrence is taken.
    coming = occurrence_id(load_jobs(jobs)[0].timetable().next_after(
        datetime.now(UTC) + timedelta(seconds=3)) or datetime.now(UTC))
    deep = b"[" * 100_000
    _put_all(agent.endpoint, [
        (b"/cron/jobs/deep", deep),                                  # RecursionError
        (b"/cron/jobs/innocent", _spec("ghost", f"echo x >> {ghost}").encode()),  # ghost
        (b"/cron/jobs/\xff\xfe", _spec("good", "true").encode()),   # key not UTF-8
        (b"/cron/killer/good", b"[1, 2]"),                           # not an object
        (b"/cron/killer/deep", deep),
        (b"/cron/workers/\xff\xfe", b"{}"),                          # key not UTF-8
        (b"/cron/workers/deep", deep),
        (b"/cron/workers/odd", b'{"started_at": "yesterday", "tags": [1]}'),
        (b"/cron/lock/\xff", b"{}"),
        (b"/cron/lock/deep", deep),
        (b"/cron/runs/good/" + occ.encode(), deep),
        (b"/cron/runs/good/x", b"\"not a record\""),
        (f"/cron/runs/good/{coming}".encode(), b"[" * 5000),
        # Path traversal: the occurrence id named the job's log file.
        (f"/cron/trigger/good/{occ}-manual-abcd/../../../x".encode(), b"{}"),
        (b"/cron/trigger/\xff/x", b"{}"),
    ])
    before = _runs(good)
    wait_until(lambda: _runs(good) >= before + 4, 60,
               "the good job to keep running after the bad keys\n" + agent.log()[-4000:],
               step=0.2)
    assert agent.alive()

    # `raftcron jobs list` answers, listing the good job (and the bad ones as invalid).
    out = subprocess.run([sys.executable, "-m", "scheduler.cli", "jobs", "list",
                          "--endpoints", agent.endpoint, "-o", "json"],
                         check=False, capture_output=True, text=True,
                         env={**ENV, "PATH": "/usr/bin:/bin"},
                         timeout=60, cwd=procs.workdir)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "good" in out.stdout and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "scheduler.cli", "workers",
                          "--endpoints", agent.endpoint, "-o", "json"],
                         check=False, capture_output=True, text=True, env=ENV, timeout=60,
                         cwd=procs.workdir)
    assert out.returncode == 0, out.stderr[-2000:]
    assert '"a1"' in out.stdout and "Traceback" not in out.stderr

    # A worker started afterwards loads the good job and runs it, with the bad keys still
    # there: stop the agent, start it again on the same data dir.
    agent.popen.send_signal(signal.SIGTERM)
    assert agent.popen.wait(timeout=60) == 0, agent.log()[-3000:]
    log1 = agent.log()
    agent2 = start_agent(procs, "a1", "--data-dir", data)
    before = _runs(good)
    wait_until(lambda: _runs(good) >= before + 4, 60,
               "the restarted agent to run the good job\n" + agent2.log()[-4000:], step=0.2)
    agent2.popen.send_signal(signal.SIGTERM)
    assert agent2.popen.wait(timeout=60) == 0, agent2.log()[-3000:]

    # The first agent saw every bad key arrive; the second lists jobs and workers at start
    # (locks, killers and triggers are watched from then on).
    for log, bad in ((log1, 10), (agent2.log(), 5)):
        assert '"event": "worker.task_failed"' not in log, log[-4000:]
        assert '"event": "worker.view_error"' not in log, log[-4000:]
        assert "Traceback" not in log, log[-4000:]
        # Each bad key is logged (once per agent, not on every event).
        assert log.count('"event": "store.bad_key"') >= bad, log[-4000:]
        assert log.count('"key": "/cron/jobs/innocent"') == 1, log[-4000:]
    assert not ghost.exists(), "the ghost job ran"
    assert coming not in good.read_text().split(), "an occurrence with a record ran"
    assert not (procs.workdir / "x.1.log").exists(), "a job log was written outside the log dir"
    assert not list(procs.workdir.rglob("x.*.log"))
