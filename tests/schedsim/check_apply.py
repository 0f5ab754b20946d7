"""Checkers for operators applying job files at once (``operators.py``): what a user who
runs ``raftcron apply -f FILE --prune`` depends on.

* **last writer wins**: at the end ``/cron/jobs/`` is exactly the file of the acknowledged
  apply that wrote last (by store revision) — apply is compare-and-set, so a concurrent
  apply fails and is run again rather than merging two files;
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
    if not h.applies:
        return []
    if any(a.acked is None for a in h.applies):
        return []  # an operator gave up: which file should win is not defined
    final: dict[str, str] = {}
    for c in h.commits:
        if c.key.startswith("/cron/jobs/"):
            name = c.key[len("/cron/jobs/"):]
            if c.value is None:
                final.pop(name, None)
            else:
                final[name] = c.value.decode()
    last = max(h.applies, key=lambda a: a.revision)
    if final == last.jobs:
        return []
    diff = sorted(n for n in set(final) | set(last.jobs) if final.get(n) != last.jobs.get(n))
    return [f"the stored jobs differ from file {last.file} applied last by {last.operator} "
            f"(rev {last.revision}, acknowledged at {last.acked:.3f}) in {diff}"]


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
