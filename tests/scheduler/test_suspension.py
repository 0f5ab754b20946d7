"""Suspension is state, not spec (#13 item 6): `jobs suspend` survives an agent restarted
with its `--jobs` file and an `apply -f` of that file, and says who, when and why."""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.procs import REPO, Proc, ProcessGroup, free_port, wait_until

ENV = {"PYTHONPATH": str(REPO), "RAFTCRON_LOG_LEVEL": "info"}
QUIET = 4.0
"""Seconds a suspended `@every 1s` job is watched for runs (it would run ~4 times)."""


def raftcron(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *args,
                           "--endpoints", endpoint],
                          capture_output=True, text=True, check=False, timeout=60,
                          env=dict(os.environ, **ENV))


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def start_agent(procs: ProcessGroup, cport: int, pport: int, jobs: Path) -> Proc:
    proc = procs.spawn("agent", [
        sys.executable, "-m", "scheduler.cli", "agent", "--name", "a1",
        "--data-dir", str(procs.workdir / "data"),
        "--listen-client", f"127.0.0.1:{cport}", "--listen-peer", f"127.0.0.1:{pport}",
        "--jobs", str(jobs)], cport, env=ENV)
    wait_until(lambda: '"event": "worker.registered"' in proc.log() or not proc.alive(),
               60, "the agent's worker to register", step=0.2)
    assert proc.alive(), proc.log()
    return proc


def stays_quiet(out: Path, agent: Proc) -> None:
    """Observe the job's marker file for QUIET seconds: no run may start."""
    before = lines(out)
    deadline = time.monotonic() + QUIET
    while time.monotonic() < deadline:
        assert lines(out) == before, (
            f"the suspended job ran: {lines(out)[len(before):]}\n{agent.log()[-3000:]}")
        time.sleep(0.1)


def test_suspension_survives_an_agent_restart_and_apply(procs: ProcessGroup) -> None:
    out = procs.workdir / "runs.txt"
    jobs = procs.workdir / "jobs.yaml"
    jobs.write_text("jobs:\n  - name: tick\n    schedule: '@every 1s'\n"
                    f"    command: 'echo $RAFTCRON_OCCURRENCE >> {out}'\n")
    cport, pport = free_port(), free_port()
    agent = start_agent(procs, cport, pport, jobs)
    ep = agent.endpoint
    wait_until(lambda: len(lines(out)) >= 2, 30, "tick to run\n" + agent.log(), step=0.2)

    res = raftcron(ep, "jobs", "suspend", "tick", "--reason", "disk replacement")
    assert res.returncode == 0 and "tick suspended" in res.stdout, res
    shown = json.loads(raftcron(ep, "jobs", "show", "tick", "-o", "json").stdout)
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    assert shown["suspension"]["by"] == who and shown["suspension"]["at"]
    assert shown["suspension"]["reason"] == "disk replacement"
    assert shown["spec"]["suspend"] is False, "the spec is what the file says"
    listed = raftcron(ep, "jobs", "list")
    assert f"by {who}" in listed.stdout and "disk replacement" in listed.stdout, listed.stdout

    agent.popen.send_signal(signal.SIGTERM)
    assert agent.popen.wait(timeout=60) == 0, agent.log()[-3000:]
    agent = start_agent(procs, cport, pport, jobs)  # the same --jobs file
    assert '"event": "agent.jobs_applied"' in agent.log()
    stays_quiet(out, agent)

    applied = raftcron(ep, "apply", "-f", str(jobs))
    assert applied.returncode == 0 and "0 job(s) changed" in applied.stdout, applied
    stays_quiet(out, agent)

    # `suspend: false` written out in the file does not resume it either.
    jobs.write_text(jobs.read_text() + "    suspend: false\n")
    assert raftcron(ep, "apply", "-f", str(jobs)).returncode == 0
    stays_quiet(out, agent)
    assert json.loads(raftcron(ep, "jobs", "list", "-o", "json").stdout)[0]["suspended"]

    # Only `jobs resume` does: the job runs again (so the quiet spells above meant it).
    assert "tick resumed" in raftcron(ep, "jobs", "resume", "tick").stdout
    count = len(lines(out))
    wait_until(lambda: len(lines(out)) > count, 30, "tick to run again", step=0.2)


def test_suspend_true_in_the_file_suspends_and_only_the_file_resumes(
        procs: ProcessGroup) -> None:
    from tests.helpers.procs import start_coord

    ep = start_coord(procs).endpoint
    jobs = procs.workdir / "jobs.yaml"
    jobs.write_text("jobs:\n  - name: nightly\n    schedule: '0 3 * * *'\n"
                    "    command: 'true'\n    suspend: true\n")
    assert raftcron(ep, "apply", "-f", str(jobs)).returncode == 0
    listed = raftcron(ep, "jobs", "list")
    assert "by its spec" in listed.stdout, listed.stdout
    res = raftcron(ep, "jobs", "resume", "nightly")
    assert res.returncode == 1 and "suspend: true" in res.stderr, res
    jobs.write_text(jobs.read_text().replace("suspend: true", "suspend: false"))
    assert raftcron(ep, "apply", "-f", str(jobs)).returncode == 0
    assert json.loads(raftcron(ep, "jobs", "list", "-o", "json").stdout)[0]["suspended"] \
        is False
