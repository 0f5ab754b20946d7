"""What `jobs history`, `jobs logs`, `jobs show` and `jobs kill` tell a user, against a real
agent (#13 items 7 and 8).

* A job that fails twice and succeeds on its third attempt shows all three attempts
  (start, end, exit code, status, log path), the final attempt number and a duration;
  `jobs logs` prints the output and names where the full log lives (host and path).
* A job whose spec was deleted while it runs can still be shown, killed and inspected by
  name; `jobs kill` with nothing running says so and exits 1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.procs import REPO, Proc, free_port, process_group, wait_until

ENV = {"PYTHONPATH": str(REPO), "RAFTCRON_LOG_LEVEL": "info"}


def raftcron(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *args,
                           "--endpoints", endpoint],
                          capture_output=True, text=True, check=False, timeout=60,
                          env=dict(os.environ, **ENV))


def jobs_file(workdir: Path) -> str:
    counter = workdir / "counter"
    return f"""jobs:
  - name: flaky
    schedule: "0 0 1 1 *"
    retries: 3
    retry_backoff: 1s
    command: 'n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter};
      echo "flaky attempt $n"; [ $n -ge 3 ]'
  - name: slow
    schedule: "0 0 1 1 *"
    command: 'echo slow started; sleep 120'
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    workdir = Path(tmp_path_factory.mktemp("history"))
    (workdir / "jobs.yaml").write_text(jobs_file(workdir))
    with process_group(workdir) as group:
        cport, pport = free_port(), free_port()
        proc = group.spawn("agent", [
            sys.executable, "-m", "scheduler.cli", "agent", "--name", "a1",
            "--listen-client", f"127.0.0.1:{cport}", "--listen-peer", f"127.0.0.1:{pport}",
            "--jobs", str(workdir / "jobs.yaml"), "--tags", "zone=a,disk=ssd",
            "--log-dir", str(workdir / "logs")], cport, env=ENV)
        wait_until(lambda: '"event": "worker.registered"' in proc.log() or not proc.alive(),
                   60, "the agent's worker to register", step=0.2)
        assert proc.alive(), proc.log()
        yield proc


def history_json(endpoint: str, name: str) -> list[dict[str, Any]]:
    res = raftcron(endpoint, "jobs", "history", name, "-o", "json")
    assert res.returncode == 0, res.stderr
    rows: list[dict[str, Any]] = json.loads(res.stdout)
    return rows


def test_every_attempt_of_a_run_is_in_its_history(agent: Proc) -> None:
    ep = agent.endpoint
    assert raftcron(ep, "jobs", "trigger", "flaky").returncode == 0
    wait_until(lambda: any(r["status"] == "succeeded" for r in history_json(ep, "flaky")),
               60, "the third attempt to succeed\n" + agent.log()[-3000:], step=0.3)
    [run] = history_json(ep, "flaky")
    assert run["attempt"] == 3, run
    attempts = run["attempts"]
    assert [(a["attempt"], a["status"], a["exit_code"]) for a in attempts] == [
        (1, "failed", 1), (2, "failed", 1), (3, "succeeded", 0)], attempts
    for a in attempts:
        assert a["started_at"] and a["finished_at"] and a["duration"] is not None, a
        assert Path(a["log"]).is_file(), a
        assert f"flaky attempt {a['attempt']}" in Path(a["log"]).read_text()
    # 1 s then 2 s of backoff between the attempts: the run lasted at least 3 s.
    assert run["duration"] >= 3.0, run

    table = raftcron(ep, "jobs", "history", "flaky")
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[1] + table.stdout.splitlines()[2]
    assert "attempts" in header and "duration" in header, table.stdout
    assert "1:failed(1) 2:failed(1) 3:succeeded(0)" in table.stdout, table.stdout

    logs = raftcron(ep, "jobs", "logs", "flaky")
    assert logs.returncode == 0, logs.stderr
    assert "flaky attempt 3" in logs.stdout, logs.stdout
    for a in attempts:
        assert f"full log {socket.gethostname()}:{a['log']}" in logs.stdout, logs.stdout
    by_occ = raftcron(ep, "jobs", "logs", "flaky", run["occurrence"])
    assert by_occ.stdout == logs.stdout
    bad = raftcron(ep, "jobs", "logs", "flaky", "20200101T000000Z")
    assert bad.returncode == 1 and bad.stderr.startswith("Error: job 'flaky' has no run")


def test_a_deleted_job_still_running_can_be_shown_killed_and_inspected(agent: Proc) -> None:
    ep = agent.endpoint
    nothing = raftcron(ep, "jobs", "kill", "slow")
    assert nothing.returncode == 1, nothing
    assert nothing.stderr.strip() == (
        "Error: nothing to kill: job 'slow' is not running "
        "(see `raftcron jobs history slow`)")
    assert raftcron(ep, "jobs", "trigger", "slow").returncode == 0
    wait_until(lambda: any(r["status"] == "running" for r in history_json(ep, "slow")),
               30, "slow to run", step=0.2)
    assert raftcron(ep, "jobs", "delete", "slow").returncode == 0

    shown = raftcron(ep, "jobs", "show", "slow", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["deleted"] is True and info["spec"] is None
    assert info["lock"]["worker"] == "a1" and info["last_run"]["status"] == "running"
    assert "deleted" in raftcron(ep, "jobs", "show", "slow").stdout

    killed = raftcron(ep, "jobs", "kill", "slow")
    assert killed.returncode == 0, killed.stderr
    wait_until(lambda: history_json(ep, "slow")[0]["status"] == "killed", 30,
               "the run to be killed\n" + agent.log()[-3000:], step=0.2)
    assert "slow started" in raftcron(ep, "jobs", "logs", "slow").stdout
    again = raftcron(ep, "jobs", "kill", "slow")
    assert again.returncode == 1 and "nothing to kill" in again.stderr
    unknown = raftcron(ep, "jobs", "kill", "nope")
    assert unknown.returncode == 1 and "no job named 'nope'" in unknown.stderr
    assert raftcron(ep, "jobs", "history", "nope").returncode == 1


def test_workers_prints_tags_as_k_equals_v(agent: Proc) -> None:
    res = raftcron(agent.endpoint, "workers")
    assert res.returncode == 0, res.stderr
    assert "disk=ssd,zone=a" in res.stdout, res.stdout
    rows = json.loads(raftcron(agent.endpoint, "workers", "-o", "json").stdout)
    assert rows[0]["tags"] == {"zone": "a", "disk": "ssd"}
