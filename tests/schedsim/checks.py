"""Checkers: each promise, judged on a run's recorded history (``runner.History``).

Each returns a list of violations (strings naming the job, occurrence and times); an
empty list is a pass. The fault windows excuse what a promise does not cover — stated
per checker.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime

from scheduler.claim import ACTIVE
from scheduler.plan import MANUAL_SUFFIX, occurrence_id, occurrence_instant, parse_schedule, spread
from tests.schedsim.check_apply import concurrency, last_writer_wins, spec_followed, versions
from tests.schedsim.options import JobPlan
from tests.schedsim.procs import ProcEvent
from tests.schedsim.runner import History, Window
from tests.schedsim.vtime import EPOCH

LATE = 1.5
"""Seconds after its instant (plus the worker's skew) by which an occurrence of a
``forbid`` job must start, outside fault windows (the rank-k backup claims k * grace late,
the store answers within milliseconds). A queued one waits for a whole previous run."""
TERMINAL = frozenset({"succeeded", "failed", "timeout", "killed", "lost", "missed",
                      "skipped"})

Interval = tuple[float, float, ProcEvent]


def _intervals(h: History) -> dict[str, list[Interval]]:
    """Each process's [start, end) by job (end = infinity if it never ended)."""
    open_: dict[int, ProcEvent] = {}
    out: dict[str, list[Interval]] = defaultdict(list)
    for e in h.procs:
        if e.kind == "start":
            open_[e.pid] = e
        else:
            s = open_.pop(e.pid)
            out[s.job].append((s.at, e.at, s))
    for s in open_.values():
        out[s.job].append((s.at, float("inf"), s))
    for v in out.values():
        v.sort(key=lambda iv: iv[0])
    return out


def _instant(occ: str) -> float:
    t = occurrence_instant(occ)
    assert t is not None
    return t.timestamp() - EPOCH


def _jobs(h: History) -> dict[str, JobPlan]:
    """The jobs by name; a job the operators apply (``check_apply``) with the policy all
    its stored versions share, else as ``allow``."""
    out = {j.name: j for j in h.options.jobs}
    for name, vs in versions(h).items():
        if name not in out:
            out[name] = JobPlan(name, 0, concurrency(vs), 0.0, 0.0, 0, 0, "record")
    return out


def _disturbed(h: History, worker: str, start: float, end: float) -> bool:
    """True if an outage, or any worker's crash or cut, overlaps [start - ttl, end]: a
    dead or cut-off first-ranked worker leaves the occurrence to a backup, which may only
    claim once the holder's lease is gone; claims retry through an outage. (``worker``
    is kept for the message; any worker's fault counts.)"""
    lo = start - h.options.session_ttl
    return any(w.start <= end and w.end >= lo and w.kind == "outage" for w in h.windows) or any(
        w.start <= end and w.end >= lo and w.kind in ("crash", "cut", "slow") for w in h.windows)


# ------------------------------------------------------------------ the promises
def one_start_per_occurrence(h: History) -> list[str]:
    """Promise 1: every start of (job, occurrence) belongs to one run (one fencing token;
    a retry is the same run)."""
    runs: dict[tuple[str, str], set[tuple[str, int]]] = defaultdict(set)
    for e in h.procs:
        if e.kind == "start":
            runs[(e.job, e.occurrence)].add((f"{e.worker}#{e.incarnation}", e.token))
    return [f"{job}@{occ} started by {sorted(v)}" for (job, occ), v in runs.items()
            if len({t for _, t in v}) > 1]


def no_overlap(h: History) -> list[str]:
    """Promises 7 and 8: a ``forbid`` or ``replace`` job never has two processes alive at
    once — on one worker or across a dead or cut-off one (``replace`` kills before it
    starts; the deadman and the supervisor end a lost worker's jobs before the lock can
    pass on)."""
    bad = []
    jobs = _jobs(h)
    for job, ivs in _intervals(h).items():
        if jobs[job].concurrency == "allow":
            continue
        last_end, last = float("-inf"), None
        for start, end, e in ivs:
            if last is not None and start < last_end:
                bad.append(f"{job}: {e.occurrence} ({e.worker}#{e.incarnation}) started at "
                           f"{start:.3f} while {last.occurrence} ({last.worker}#"
                           f"{last.incarnation}) ran until {last_end:.3f}")
            if end > last_end:
                last_end, last = end, e
    return bad


def forbid_on_time_in_order(h: History) -> list[str]:
    """Promise 8: a ``forbid`` job's occurrences start in order and on time (a queued one
    would start late); a ``replace`` job's start in order too (an older occurrence must
    not replace a newer run). Only first starts count (a retry is late by design). Lateness is
    excused near a fault (:func:`_disturbed`); order never is."""
    bad = []
    jobs = _jobs(h)
    first: dict[tuple[str, str], ProcEvent] = {}
    for e in h.procs:
        if e.kind == "start":
            first.setdefault((e.job, e.occurrence), e)
    by_job: dict[str, list[ProcEvent]] = defaultdict(list)
    for (job, occ), e in first.items():
        # A manual occurrence is named by the operator's clock, the scheduled ones by
        # the (skewed) workers': no order between them.
        if jobs[job].concurrency in ("forbid", "replace") and MANUAL_SUFFIX not in occ:
            by_job[job].append(e)
    for job, starts in by_job.items():
        starts.sort(key=lambda e: e.at)
        for prev, cur in itertools.pairwise(starts):
            if _instant(cur.occurrence) < _instant(prev.occurrence):
                bad.append(f"{job} ({jobs[job].concurrency}): {cur.occurrence} started at "
                           f"{cur.at:.3f}, after {prev.occurrence} (out of order)")
        if jobs[job].concurrency != "forbid":
            continue
        for e in starts:
            due = _instant(e.occurrence) - h.options.skew[e.worker]
            if e.at > due + LATE and not _disturbed(h, e.worker, due, e.at):
                bad.append(f"{job}: {e.occurrence} started {e.at - due:.3f}s late on "
                           f"{e.worker}#{e.incarnation}")
    return bad


def fencing(h: History) -> list[str]:
    """Promise 3: fencing tokens increase per job, run after run; and no write of a run's
    record by its holder lands after the run was settled (a stale holder is refused)."""
    bad = []
    seen: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    tokens: dict[tuple[str, str], int] = {}
    for e in h.procs:
        if e.kind == "start" and tokens.setdefault((e.job, e.occurrence), e.token) == e.token:
            runs = seen[e.job]
            if not runs or runs[-1][1:] != (e.token, e.occurrence):
                runs.append((e.at, e.token, e.occurrence))
    for job, runs in seen.items():
        by_token: dict[int, str] = {}
        for _, token, occ in runs:
            if token in by_token and by_token[token] != occ:
                bad.append(f"{job}: token {token} used by {by_token[token]} and {occ}")
            by_token[token] = occ
        if _jobs(h)[job].concurrency == "allow":
            continue  # overlapping runs start at their instants, claimed in any order
        for (t0, a, o0), (t1, b, o1) in itertools.pairwise(runs):
            if b <= a:
                bad.append(f"{job}: token {b} ({o1} at {t1:.3f}) after {a} ({o0} at {t0:.3f})")
    settled: dict[str, set[str]] = defaultdict(set)
    for c in h.commits:
        if not c.key.startswith("/cron/runs/") or c.value is None:
            continue
        rec = json.loads(c.value)
        rid, status = rec.get("run_id", ""), rec.get("status", "")
        if rid and rid in settled[c.key]:
            bad.append(f"{c.key}: run {rid[:8]} written ({status}) at rev {c.rev} after it "
                       f"was settled")
        if status in TERMINAL and rid:
            settled[c.key].add(rid)
        if status in ACTIVE and rec.get("fencing_token", 0) and rec["fencing_token"] > c.rev:
            bad.append(f"{c.key}: token {rec['fencing_token']} from the future at {c.rev}")
    return bad


def _suspended(h: History, job: str, t: float, margin: float) -> bool:
    return any(w.kind in ("suspend", "suspended", "resuming") and w.worker == job
               and w.start - margin <= t <= w.end + margin for w in h.windows)


PROPAGATE = 0.5
"""Seconds for an acknowledged suspension to reach every connected worker's view."""


def suspension_holds(h: History) -> list[str]:
    """Promise 9: no scheduled occurrence of a suspended job starts — one due from
    ``PROPAGATE`` after the suspension was acknowledged until the resume was sent (less
    the starting worker's clock lag) — whichever worker restarted meanwhile (they read it
    from the store); docs/scheduling.md: "occurrences it missed while suspended are not
    replayed"."""
    bad = []
    seen: set[tuple[str, str]] = set()
    for e in h.procs:
        if e.kind != "start" or MANUAL_SUFFIX in e.occurrence or (e.job, e.occurrence) in seen:
            continue
        seen.add((e.job, e.occurrence))
        t = _instant(e.occurrence)
        # A resumed job fires from its worker's "now" on: a clock behind by s seconds
        # fires what was due up to s seconds before the resume.
        skew = min(h.options.skew[e.worker], 0.0)
        for w in h.windows:
            if (w.kind == "suspended" and w.worker == e.job
                    and w.start + PROPAGATE <= t < w.end + skew - 0.05):
                bad.append(f"{e.job}@{e.occurrence} started at {e.at:.3f} on {e.worker}#"
                           f"{e.incarnation}, suspended from {w.start:.3f} to {w.end:.3f}")
    return bad


def accounted(h: History) -> list[str]:
    """Every occurrence due while the workers ran — from two seconds in to ``duration``
    (the settle time lets the last ones be recorded) — has a run record: started, missed,
    skipped, lost or killed. Excused: one due while its job was suspended (from the
    request, or a second before, to a second after the resume)."""
    written = {c.key for c in h.commits if c.key.startswith("/cron/runs/") and c.value}
    bad = []
    for job in h.options.jobs:
        sched = spread(parse_schedule(f"@every {job.period}s"), job.name)
        phase = sched.phase_ms / 1000  # type: ignore[union-attr]
        k = int((EPOCH + 2.0 - phase) // job.period) + 1
        while (t := phase + k * job.period) <= EPOCH + h.options.duration:
            occ = occurrence_id(datetime.fromtimestamp(t, UTC))
            if f"/cron/runs/{job.name}/{occ}" not in written and not _suspended(
                    h, job.name, t - EPOCH, 1.0):
                bad.append(f"{job.name}@{occ} ({t - EPOCH:.3f}) has no record")
            k += 1
    return bad


CHECKS: dict[str, Callable[[History], list[str]]] = {
    "one_start": one_start_per_occurrence,
    "no_overlap": no_overlap,
    "forbid_order": forbid_on_time_in_order,
    "fencing": fencing,
    "accounted": accounted,
    "suspension": suspension_holds,
    "apply_last_wins": last_writer_wins,
    "apply_followed": spec_followed,
}


def check(h: History) -> dict[str, list[str]]:
    """Every checker's violations, by name (only those that found some)."""
    out = {name: fn(h) for name, fn in CHECKS.items()}
    return {k: v for k, v in out.items() if v}


__all__ = ["CHECKS", "Window", "check"]
