"""``concurrency: allow`` and ``replace`` at the process level (an agent, real job processes).

A long job with an occurrence due while it runs:

* ``allow`` starts the next occurrence while the previous one still runs (each run stamps
  its own start and end), skips nothing, and every run finishes.
* ``replace`` kills the running occurrence before it starts the next one: the killed run's
  record says ``killed``, replaced by the next occurrence, and ends no later than its
  successor's start; and each run takes an exclusive flock that its process holds until it
  dies, so a successor that found it still held (its predecessor alive) would say so.

``forbid`` (skip, never overlap, in order) is covered in the same way by
``tests/scheduler/test_forbid_skips.py``.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from scheduler.admin import history
from scheduler.claim import RunRecord
from scheduler.plan import parse_occurrence_id
from tests.helpers.procs import Proc, ProcessGroup, pid_alive, wait_until
from tests.scheduler.test_agent import query, start_agent

STAMP = "$RAFTCRON_OCCURRENCE $(date +%s.%N)"


def _lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def _agent(procs: ProcessGroup, name: str, job: str) -> Proc:
    jobs = procs.workdir / "jobs.yaml"
    jobs.write_text("jobs:\n" + job)
    return start_agent(procs, name, "--jobs", str(jobs), "--data-dir", str(procs.workdir / name))


def _records(agent: Proc, job: str) -> dict[str, RunRecord]:
    rows: list[RunRecord] = query(agent.endpoint, lambda c: history(c, job, limit=200)) or []
    return {r.occurrence: r for r in rows}


def _by_instant(occs: list[str]) -> list[str]:
    return sorted(occs, key=parse_occurrence_id)


def test_allow_starts_the_next_occurrence_while_the_previous_one_runs(
        procs: ProcessGroup) -> None:
    out = procs.workdir / "runs.txt"
    period, run = 2, 5  # each run is still going at the next two instants
    agent = _agent(procs, "allow1", (
        f"  - name: par\n    schedule: '@every {period}s'\n    concurrency: allow\n"
        f"    command: 'echo {STAMP} start $$ >> {out}; sleep {run}; "
        f"echo {STAMP} end $$ >> {out}'\n"))

    def ended() -> list[str]:
        return [w[0] for w in _lines(out) if w[2] == "end"]
    wait_until(lambda: len(ended()) >= 4, 90, "four finished runs\n" + agent.log()[-3000:],
               step=0.5)
    lines = _lines(out)
    starts = {w[0]: (float(w[1]), int(w[3])) for w in lines if w[2] == "start"}
    ends = {w[0]: float(w[1]) for w in lines if w[2] == "end"}
    done = _by_instant(list(ends))
    # Each finished run but the last: the next occurrence started while it still ran, as
    # a different process.
    for prev, nxt in itertools.pairwise(_by_instant([o for o in starts if o <= done[-1]])):
        assert starts[nxt][0] < ends[prev], (
            f"{nxt} started {starts[nxt][0] - ends[prev]:.1f}s after {prev} ended: "
            f"allow waited\n{lines}")
        assert starts[nxt][1] != starts[prev][1]
    records = _records(agent, "par")
    assert not [r for r in records.values() if r.status in ("skipped", "missed")], records
    for occ in done:
        rec = records[occ]
        assert rec.status == "succeeded" and rec.started_at < rec.finished_at, rec
    overlapping = [(a, b) for a, b in itertools.pairwise(done)
                   if records[b].started_at < records[a].finished_at]
    assert overlapping, "the run records show no two runs at once"


def test_replace_kills_the_running_occurrence_before_starting_the_next(
        procs: ProcessGroup) -> None:
    out = procs.workdir / "runs.txt"
    overlap = procs.workdir / "overlap.txt"
    held = procs.workdir / "job.flock"
    agent = _agent(procs, "replace1", (
        "  - name: rep\n    schedule: '@every 3s'\n    concurrency: replace\n"
        f"    command: 'exec 9>>{held}; if flock -n 9; then echo {STAMP} start $$ >> {out}; "
        f"exec sleep 60; else echo {STAMP} overlap $$ >> {overlap}; exit 1; fi'\n"))

    def started() -> list[str]:
        return [w[0] for w in _lines(out) if w[2] == "start"]
    wait_until(lambda: len(started()) >= 3 or overlap.exists(), 90,
               "three runs\n" + agent.log()[-3000:], step=0.5)
    assert not overlap.exists(), (
        f"a run started while its predecessor still held the job's flock: "
        f"{overlap.read_text()}")
    occs = _by_instant(started())
    pids = {w[0]: int(w[3]) for w in _lines(out)}

    def replaced() -> bool:  # the earlier runs' final records and the last one's start
        recs = _records(agent, "rep")
        return (all(o in recs and recs[o].status == "killed" for o in occs[:-1])
                and occs[-1] in recs and recs[occs[-1]].started_at > 0)
    wait_until(replaced, 30, "the replaced runs' records", step=0.5)
    assert not overlap.exists(), (
        f"a run started while its predecessor still held the job's flock: "
        f"{overlap.read_text()}")
    records = _records(agent, "rep")
    for prev, nxt in itertools.pairwise(occs):
        old, new = records[prev], records[nxt]
        assert old.status == "killed" and old.note.endswith(f"replaced by occurrence {nxt}"), old
        assert 0 < old.finished_at <= new.started_at, (
            f"{prev} ended at {old.finished_at}, after {nxt} started at {new.started_at}")
        assert not pid_alive(pids[prev]), f"{prev}'s process {pids[prev]} survived"
    assert not [r for r in records.values() if r.status in ("skipped", "missed")], records
