"""What an operator reads in the agent's log (issue 13, item 11; README "Logs").

One line per run start (``run.started``) and one per end (``run.finished``); a run that
failed or timed out ends at warning, a lost one is reported at warning or error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from typing import Any

from tests.helpers.procs import Proc, ProcessGroup, wait_until
from tests.scheduler.test_agent import ENV, start_agent

JOBS = """\
jobs:
  - name: ok
    schedule: '@every 2s'
    command: 'true'
  - name: bad
    schedule: '@every 2s'
    command: 'exit 3'
  - name: slow
    schedule: '@every 3s'
    timeout: 1s
    command: 'sleep 30'
  - name: long
    schedule: '@daily'
    command: 'sleep 15'
"""


def _events(proc: Proc) -> list[dict[str, Any]]:
    out = []
    for line in proc.log().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and "event" in e:
            out.append(e)
    return out


def _ends(proc: Proc, job: str) -> list[dict[str, Any]]:
    return [e for e in _events(proc) if e["event"] == "run.finished" and e.get("job") == job]


def test_one_line_per_start_and_end_at_a_level_that_says_how_it_went(
        procs: ProcessGroup) -> None:
    jobs = procs.workdir / "jobs.yaml"
    jobs.write_text(JOBS)
    data = str(procs.workdir / "data")
    agent = start_agent(procs, "a1", "--jobs", str(jobs), "--data-dir", data)
    wait_until(lambda: all(len(_ends(agent, j)) >= 2 for j in ("ok", "bad", "slow")), 90,
               "two ends of each job\n" + agent.log()[-3000:], step=0.5)
    events = _events(agent)
    for job, status, level in (("ok", "succeeded", "info"), ("bad", "failed", "warning"),
                               ("slow", "timeout", "warning")):
        ends = _ends(agent, job)
        assert {(e["status"], e["level"]) for e in ends} == {(status, level)}, ends
    # Exactly one start line and at most one end line per run (the last may still run);
    # no second line per start or end at info from the executor.
    starts = Counter(e["run_id"] for e in events if e["event"] == "run.started")
    ends_by_run = Counter(e["run_id"] for e in events if e["event"] == "run.finished")
    assert set(starts.values()) == {1} and set(ends_by_run.values()) == {1}, (starts, ends_by_run)
    assert set(ends_by_run) <= set(starts)
    info_lines = Counter(e["event"] for e in events if e.get("level") == "info")
    assert not info_lines.get("job.start") and not info_lines.get("job.end"), info_lines

    # A lost run: the agent running `long` is killed with kill -9; the agent restarted on
    # the same data dir finds the run's lock gone with the old session and says so.
    subprocess.run([sys.executable, "-m", "scheduler.cli", "jobs", "trigger", "long",
                    "--endpoints", agent.endpoint], check=True, capture_output=True, env=ENV,
                   timeout=60, cwd=procs.workdir)
    wait_until(lambda: any(e["event"] == "run.started" and e.get("job") == "long"
                           for e in _events(agent)), 30, "long to start", step=0.2)
    agent.kill9()
    agent2 = start_agent(procs, "a1", "--data-dir", data)
    wait_until(lambda: any(e["event"] == "run.lost" and e.get("job") == "long"
                           for e in _events(agent2)), 60,
               "the lost run to be reported\n" + agent2.log()[-3000:], step=0.5)
    lost = [e for e in _events(agent2) if e["event"] == "run.lost"]
    assert {e["level"] for e in lost} <= {"warning", "error"}, lost
