"""``concurrency: forbid`` skips, in order (issue 13, item 5).

A forbid job whose runs take longer than its period: every occurrence whose instant comes
while the previous run is running is recorded ``skipped`` with the reason and never started
later (before, they queued for the lock and started late, newest first); starts are in
occurrence order and on time. ``raftcron jobs trigger`` on the running job says so, exits
non-zero and starts nothing.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

from scheduler.admin import history
from scheduler.plan import parse_occurrence_id
from tests.helpers.procs import ProcessGroup, wait_until
from tests.scheduler.test_agent import ENV, query, start_agent

PERIOD = 3
RUN = 8
"""Each run sleeps RUN s on a PERIOD s schedule: the two occurrences after each start come
while it runs. A queued occurrence would start RUN - PERIOD = 5 s late."""
LATE_BOUND = 3.0
"""Seconds after its instant by which a run must have started (one that waited in a queue
for the previous run would start at least 5 s late)."""


def _lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def test_forbid_skips_in_order_and_trigger_refuses(procs: ProcessGroup) -> None:
    out = procs.workdir / "runs.txt"
    jobs = procs.workdir / "jobs.yaml"
    stamp = "echo $RAFTCRON_OCCURRENCE $(date +%s.%N)"
    # Each run also takes an exclusive flock that its processes hold until they die: a run
    # that found it held (a previous run still alive, its end stamp written or not) says so.
    held = procs.workdir / "job.flock"
    jobs.write_text(
        f"jobs:\n  - name: slow\n    schedule: '@every {PERIOD}s'\n    concurrency: forbid\n"
        f"    command: 'exec 9>>{held}; if flock -n 9; then {stamp} start >> {out}; "
        f"sleep {RUN}; {stamp} end >> {out}; else {stamp} overlap >> {out}; fi'\n")
    agent = start_agent(procs, "a1", "--jobs", str(jobs),
                        "--data-dir", str(procs.workdir / "data"))
    wait_until(lambda: any(w[2] == "start" for w in _lines(out)), 60,
               "the first run\n" + agent.log(), step=0.2)

    # While it runs: `jobs trigger` refuses, in one line, and starts nothing.
    trig = subprocess.run([sys.executable, "-m", "scheduler.cli", "jobs", "trigger", "slow",
                           "--endpoints", agent.endpoint], check=False, capture_output=True,
                          text=True, env=ENV, timeout=60, cwd=procs.workdir)
    assert trig.returncode == 1, (trig.stdout, trig.stderr)
    err = trig.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and "running" in err[0], err

    wait_until(lambda: sum(w[2] == "start" for w in _lines(out)) >= 3, 90,
               "three runs\n" + agent.log()[-3000:], step=0.5)
    records = query(agent.endpoint, lambda c: history(c, "slow", limit=100)) or []
    lines = _lines(out)
    starts = [(w[0], float(w[1])) for w in lines if w[2] == "start"]
    ends = {w[0]: float(w[1]) for w in lines if w[2] == "end"}

    occs = [o for o, _ in starts]
    assert occs == sorted(occs, key=parse_occurrence_id), f"out of order: {occs}"
    assert not any("manual" in o for o in occs), "the refused trigger started a run"
    for occ, at in starts:
        late = at - parse_occurrence_id(occ).timestamp()
        assert late < LATE_BOUND, f"{occ} started {late:.1f}s late"
    # Never two at once: no run found the previous one's processes alive, and each start
    # comes after the previous run ended.
    assert not [w for w in lines if w[2] == "overlap"], lines
    for (prev, _), (_, at) in itertools.pairwise(starts):
        assert prev in ends and ends[prev] <= at, (prev, at, lines)

    skipped = [r for r in records if r.status == "skipped"]
    assert len(skipped) >= 2 * (len(starts) - 1), [(r.occurrence, r.status) for r in records]
    for r in skipped:
        assert r.note.startswith("previous run ") and r.note.endswith(" still running"), r.note
        assert r.occurrence not in occs, f"skipped {r.occurrence} started anyway"
        assert r.started_at == 0
    assert '"event": "run.skipped"' in agent.log()
