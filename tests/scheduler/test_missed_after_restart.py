"""Occurrences missed while the agents were down (issue 13, item 9).

docs/scheduling.md ("Misfires and catch-up"): after a restart the latest due occurrence runs
once if it is within ``starting_deadline``, and every other one is recorded ``missed``.
Before, those still inside the deadline at the restart were neither run nor recorded: they
vanished from the history.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path

from scheduler.admin import history
from scheduler.plan import occurrence_id, parse_occurrence_id
from scheduler.spec import load_jobs
from tests.helpers.procs import Proc, ProcessGroup, wait_until
from tests.scheduler.test_agent import query, start_agent

DOWN = 8.0
"""Seconds the agent stays down: four occurrences of a job on ``@every 2s``."""


def test_occurrences_missed_while_down_are_recorded(procs: ProcessGroup) -> None:
    out = procs.workdir / "runs.txt"
    jobs = procs.workdir / "jobs.yaml"
    jobs.write_text("jobs:\n  - name: tick\n    schedule: '@every 2s'\n"
                    "    starting_deadline: 10s\n"
                    f"    command: 'echo $RAFTCRON_OCCURRENCE >> {out}'\n")
    data = str(procs.workdir / "data")
    agent = start_agent(procs, "a1", "--jobs", str(jobs), "--data-dir", data)
    wait_until(lambda: out.exists() and len(out.read_text().split()) >= 2, 60,
               "two runs\n" + agent.log(), step=0.2)
    agent.popen.send_signal(signal.SIGTERM)
    assert agent.popen.wait(timeout=60) == 0, agent.log()[-3000:]
    stopped = datetime.now(UTC)
    last_run = max(parse_occurrence_id(o) for o in out.read_text().split())
    wait_until(lambda: (datetime.now(UTC) - stopped).total_seconds() > DOWN, DOWN + 5,
               "the agent's downtime")

    agent2 = start_agent(procs, "a1", "--jobs", str(jobs), "--data-dir", data)
    started = datetime.now(UTC)
    timetable = load_jobs(jobs)[0].timetable()
    down = [occurrence_id(t) for t in timetable.between(last_run, started)
            if t > last_run][:-1]  # the last one before the restart may be the one it runs
    assert len(down) >= 3, down

    def recorded() -> dict[str, str]:
        recs = query(agent2.endpoint, lambda c: history(c, "tick", limit=200)) or []
        return {r.occurrence: r.status for r in recs}
    # Every occurrence of the downtime shows in the history: one ran (the latest due at the
    # restart), the others are missed — recorded once their starting deadline has passed.
    wait_until(lambda: all(o in recorded() for o in down), 40,
               f"records of {down}\n{recorded()}\n" + agent2.log()[-3000:], step=0.5)
    found = recorded()
    statuses = [found[o] for o in down]
    assert set(statuses) <= {"missed", "succeeded", "running", "claimed"}, found
    assert statuses.count("missed") >= len(down) - 1, found
    ran = Path(out).read_text().split()
    assert len(ran) == len(set(ran)), "an occurrence ran twice"
    assert not [o for o in down if found[o] == "missed" and o in ran]


def test_restart_after_a_skipped_occurrence_keeps_the_timeline(procs: ProcessGroup) -> None:
    """The last record before the stop is a forbid ``skipped`` one: the restart resumes
    from it (skipped and missed records carry the spec revision), so the occurrences of
    the downtime are still recorded."""
    out = procs.workdir / "runs.txt"
    jobs = procs.workdir / "jobs.yaml"
    jobs.write_text("jobs:\n  - name: slow\n    schedule: '@every 2s'\n"
                    "    starting_deadline: 10s\n"
                    f"    command: 'echo $RAFTCRON_OCCURRENCE >> {out}; sleep 5'\n")
    data = str(procs.workdir / "data")
    agent = start_agent(procs, "a1", "--jobs", str(jobs), "--data-dir", data)

    def records(p: Proc) -> dict[str, str]:
        recs = query(p.endpoint, lambda c: history(c, "slow", limit=200)) or []
        return {r.occurrence: r.status for r in recs}

    def last_is_skipped() -> bool:
        found = records(agent)
        return bool(found) and found[max(found, key=parse_occurrence_id)] == "skipped"
    wait_until(lambda: out.exists() and last_is_skipped(), 60,
               "a skipped occurrence after a run\n" + agent.log()[-3000:], step=0.1)
    before = max(records(agent), key=parse_occurrence_id)
    agent.popen.send_signal(signal.SIGTERM)
    assert agent.popen.wait(timeout=60) == 0, agent.log()[-3000:]
    stopped = datetime.now(UTC)
    wait_until(lambda: (datetime.now(UTC) - stopped).total_seconds() > DOWN, DOWN + 5,
               "the agent's downtime")

    agent2 = start_agent(procs, "a1", "--jobs", str(jobs), "--data-dir", data)
    started = datetime.now(UTC)
    timetable = load_jobs(jobs)[0].timetable()
    down = [occurrence_id(t)
            for t in timetable.between(parse_occurrence_id(before), started)][:-1]
    assert len(down) >= 2, down
    wait_until(lambda: all(o in records(agent2) for o in down), 40,
               f"records of {down}\n{records(agent2)}\n" + agent2.log()[-3000:], step=0.5)
