"""Checkers for operators applying job files at once (``operators.py``): what a user who
runs ``raftcron apply -f FILE --prune`` depends on.

* **last writer wins**: after each acknowledged apply ``/cron/jobs/`` is exactly its file,
  and at the end the file of the acknowledged apply that wrote last (by store revision) —
  apply is compare-and-set, so a concurrent apply fails and is run again rather than
  merging two files;
* **a deleted job stops**: no run of it starts later than ``FOLLOW`` after its deletion
  committed (its claim may have been sent just before);
* **an edited schedule is followed**: an occurrence that starts is on the timetable of
  the spec stored at its instant — the old spec's until ``FOLLOW`` after the edit
  committed, the new one's from the edit on (docs/scheduling.md: "an edited schedule
  never fires retroactively": nothing at or before the edit; ``SKEW`` allows for the
  starting worker's clock).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from scheduler.cron import EverySchedule
from scheduler.plan import MANUAL_SUFFIX, occurrence_instant, parse_schedule, spread
from scheduler.spec import JobSpec
from scheduler.spec_load import spec_from_json
from tests.schedsim.vtime import EPOCH

if TYPE_CHECKING:
    from tests.schedsim.runner import History

SKEW = 0.45
"""The largest worker clock skew (``options.draw``: ±0.4 s) and a little."""
FOLLOW = 0.5 + SKEW
"""Seconds after a job's spec changed on the store within which a connected worker has
seen it (the watch's ``PROPAGATE`` of ``checks.py``), plus the clock skew."""

Version = tuple[float, JobSpec | None]
"""(simulated instant of the commit, the spec stored from then on; None: deleted)."""


def versions(h: History) -> dict[str, list[Version]]:
    """Each job's stored specs over time, from the store's commits."""
    out: dict[str, list[Version]] = defaultdict(list)
    for c in h.commits:
        if c.key.startswith("/cron/jobs/"):
            name = c.key[len("/cron/jobs/"):]
            out[name].append((c.at, spec_from_json(c.value) if c.value else None))
    return out


def concurrency(vs: list[Version]) -> str:
    """The job's policy if every stored version had the same one, else ``allow`` (the
    other checkers then judge it as a job that may overlap)."""
    kinds = {s.concurrency for _, s in vs if s is not None}
    return kinds.pop() if len(kinds) == 1 else "allow"


def _on_timetable(spec: JobSpec, instant: float) -> bool:
    """``instant`` (simulated seconds) is a fire instant of ``spec`` (``@every``)."""
    sched = spread(parse_schedule(spec.schedule), spec.name)
    assert isinstance(sched, EverySchedule)
    ms = round((EPOCH + instant) * 1000)
    return (ms - sched.phase_ms) % (sched.interval * 1000) == 0


def last_writer_wins(h: History) -> list[str]:
    """After each acknowledged apply — at the revision of its txn, or of its read when it
    had nothing to change — the stored jobs are exactly its file (one txn writes a file
    of this size); at the end they are the file of the one acknowledged last by revision."""
    if not h.applies:
        return []
    bad = []
    jobs: list[tuple[int, str, str | None]] = [
        (c.rev, c.key[len("/cron/jobs/"):], c.value.decode() if c.value else None)
        for c in h.commits if c.key.startswith("/cron/jobs/")]
    state: dict[str, str] = {}
    i = 0
    acked = sorted((a for a in h.applies if a.acked is not None), key=lambda a: a.revision)
    for a in acked:
        while i < len(jobs) and jobs[i][0] <= a.revision:
            _, name, value = jobs[i]
            if value is None:
                state.pop(name, None)
            else:
                state[name] = value
            i += 1
        if state != a.jobs:
            diff = sorted(n for n in set(state) | set(a.jobs) if state.get(n) != a.jobs.get(n))
            bad.append(f"at rev {a.revision}, acknowledging {a.operator}'s apply of file "
                       f"{a.file} (at {a.acked:.3f}), the stored jobs differ from it in {diff}")
    if i < len(jobs) and not any(a.acked is None for a in h.applies):
        bad.append(f"jobs written at rev {jobs[i][0]} after the last acknowledged apply")
    return bad


def spec_followed(h: History) -> list[str]:
    if not h.applies:
        return []
    vs = versions(h)
    bad = []
    seen: set[tuple[str, str]] = set()
    for e in h.procs:
        if e.kind != "start" or MANUAL_SUFFIX in e.occurrence or (e.job, e.occurrence) in seen:
            continue
        seen.add((e.job, e.occurrence))
        timeline = vs[e.job]
        when = [at for at, _ in timeline]
        now = [s for at, s in timeline if at <= e.at]
        if now and now[-1] is None:
            gone = max(at for at, s in timeline if at <= e.at)
            if gone + FOLLOW < e.at:
                bad.append(f"{e.job}@{e.occurrence} started at {e.at:.3f} on {e.worker}#"
                           f"{e.incarnation}, after the job was deleted at {gone:.3f}")
                continue
        t = occurrence_instant(e.occurrence)
        assert t is not None
        instant = t.timestamp() - EPOCH
        ok = False
        for i, (at, spec) in enumerate(timeline):
            until = when[i + 1] if i + 1 < len(timeline) else float("inf")
            if (spec is not None and at - SKEW <= instant <= until + FOLLOW
                    and _on_timetable(spec, instant)):
                ok = True
                break
        if not ok:
            specs = ", ".join(f"{at:.3f}: {s.schedule if s else 'deleted'}"
                              for at, s in timeline)
            bad.append(f"{e.job}@{e.occurrence} ({instant:.3f}) started at {e.at:.3f} on "
                       f"{e.worker}#{e.incarnation}: on no schedule stored then ({specs})")
    return bad
