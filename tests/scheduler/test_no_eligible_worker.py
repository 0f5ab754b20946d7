"""A job no live worker may run is visible (issue 13, item 10): a warning in the worker's
log (once, not at every fire instant) and the reason in ``jobs list`` and ``jobs show``."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers.procs import ProcessGroup, wait_until
from tests.scheduler.test_agent import ENV, start_agent

REASON = "no eligible worker (tags disk=ssd match none of 1 worker)"


def _cli(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *args,
                           "--endpoints", endpoint], check=False, capture_output=True,
                          text=True, env=ENV, timeout=60)


def test_a_job_no_worker_can_run_is_visible(procs: ProcessGroup) -> None:
    out = procs.workdir / "ran.txt"
    jobs = procs.workdir / "jobs.yaml"
    jobs.write_text("jobs:\n"
                    f"  - name: fast\n    schedule: '@every 1s'\n    tags: {{disk: ssd}}\n"
                    f"    command: 'echo x >> {out}'\n"
                    f"  - name: any\n    schedule: '@every 1s'\n"
                    f"    command: 'echo $RAFTCRON_OCCURRENCE >> {out}.any'\n")
    agent = start_agent(procs, "a1", "--jobs", str(jobs), "--tags", "zone=a",
                        "--data-dir", str(procs.workdir / "data"))
    anyrun = procs.workdir / "ran.txt.any"
    # Several fire instants of both jobs pass (the untagged one runs at each of them).
    wait_until(lambda: anyrun.exists() and len(anyrun.read_text().split()) >= 5, 60,
               "five runs of the untagged job\n" + agent.log()[-3000:], step=0.2)
    warnings = [json.loads(line) for line in agent.log().splitlines()
                if '"job.no_eligible_worker"' in line]
    assert len(warnings) == 1, warnings
    assert warnings[0]["level"] == "warning" and warnings[0]["job"] == "fast"
    assert warnings[0]["reason"] == REASON
    assert not out.exists()

    listed = _cli(agent.endpoint, "jobs", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["fast"]["workers"] == REASON and rows["any"]["workers"] == "ok"
    shown = _cli(agent.endpoint, "jobs", "show", "fast")
    assert shown.returncode == 0, shown.stderr
    assert REASON in shown.stdout
