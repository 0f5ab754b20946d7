"""The scheduler simulator over the CI seeds: every checker passes on every seed.

``SCHED_SEEDS=a..b`` sets the range (default 0..299); ``SCHED_SEED=n`` runs that one seed.
The seed is in the test id and in the failure message before any assertion.
"""

from __future__ import annotations

import itertools
import os

import pytest

from tests.schedsim.check_apply import versions
from tests.schedsim.checks import check
from tests.schedsim.known import KNOWN_FAILING
from tests.schedsim.runner import run_seed
from tests.schedsim.sweep import judge, parse_range


def _seeds() -> list[int]:
    """The CI seeds, less the known failures (``known.py``: each is a FINDINGS.md entry);
    an explicit ``SCHED_SEED`` runs whatever it names."""
    if os.environ.get("SCHED_SEED"):
        return [int(os.environ["SCHED_SEED"])]
    return [s for s in parse_range(os.environ.get("SCHED_SEEDS", "0..299"))
            if s not in KNOWN_FAILING]


SEEDS = _seeds()
BATCH = 25


@pytest.mark.parametrize("first", SEEDS[::BATCH])
def test_seeds(first: int) -> None:
    """A batch of seeds (one test per batch keeps the per-test overhead off 300 runs)."""
    i = SEEDS.index(first)
    batch = SEEDS[i:i + BATCH]
    failures = {}
    for seed in batch:
        found = judge(seed)
        if found:
            failures[seed] = found
    assert not failures, "\n".join(
        f"seed {s} (replay: SCHED_SEED={s} PYTHONHASHSEED=0):\n{f}" for s, f in failures.items())


REGRESSIONS = {533: "F4", 1970: "F6", 4798: "F6", 2252: "accounting", 2452: "accounting",
               5506: "accounting", 5593: "accounting", 6005: "accounting",
               6302: "accounting", 6394: "accounting", 5881: "F2 edge", 5942: "F2 edge",
               6140: "F2 edge", 8137: "F2 edge", 10651: "F2 edge", 11500: "F2 edge",
               11598: "accounting", 8505: "order", 10905: "order", 10967: "order",
               12021: "accounting hole", 31785: "accounting hole"}
"""Seeds outside the CI range that once failed, by finding (FINDINGS.md): fixed, kept."""


@pytest.mark.parametrize("seed", sorted(REGRESSIONS))
def test_regression_seeds(seed: int) -> None:
    # Replayed as found: without the slow paths and applies drawn since (their own random
    # streams, so the rest of the seed is what it was).
    found = judge(seed, extras=False)
    assert not found, f"seed {seed} ({REGRESSIONS[seed]}) fails again:\n{found}"


REGRESSIONS_WITH_EXTRAS = {405565: "F13", 411299: "F13", 414817: "F14", 510512: "F15",
                           545205: "F17"}
"""Seeds found with the slow paths and applies drawn (their failure needs them), replayed
so: fixed, kept."""


@pytest.mark.parametrize("seed", sorted(REGRESSIONS_WITH_EXTRAS))
def test_regression_seeds_with_extras(seed: int) -> None:
    found = judge(seed)
    assert not found, f"seed {seed} ({REGRESSIONS_WITH_EXTRAS[seed]}) fails again:\n{found}"


def test_a_seed_replays_exactly() -> None:
    """The same seed twice: the same processes at the same instants, the same commits."""
    a, b = run_seed(7), run_seed(7)
    assert [(e.at, e.kind, e.job, e.occurrence, e.worker, e.token) for e in a.procs] == [
        (e.at, e.kind, e.job, e.occurrence, e.worker, e.token) for e in b.procs]
    assert [(c.rev, c.key) for c in a.commits] == [(c.rev, c.key) for c in b.commits]
    assert len(a.procs) > 10 and not check(a)


def test_the_runs_exercise_the_faults() -> None:
    """The CI seeds are not vacuous: runs start and fail, crashed and cut-off workers'
    jobs are ended by the supervisor and the deadman, ``replace`` kills."""
    notes: set[str] = set()
    starts = conflicts = deleted = edited = slow_starts = 0
    for seed in range(10):
        h = run_seed(seed)
        starts += sum(e.kind == "start" for e in h.procs)
        notes |= {e.note.split(":")[0] for e in h.procs if e.kind == "end"}
        # Operators' applies: some lost a compare-and-set and ran again; pool jobs were
        # deleted and their schedules edited.
        conflicts += sum(a.attempts > 1 for a in h.applies)
        for vs in versions(h).values():
            deleted += sum(s is None for _, s in vs)
            edited += sum(a is not None and b is not None and a.schedule != b.schedule
                          for (_, a), (_, b) in itertools.pairwise(vs))
        # Runs started by a worker while its store calls were slow.
        slow = [w for w in h.windows if w.kind == "slow"]
        slow_starts += sum(e.kind == "start" and any(
            w.worker == e.worker and w.start <= e.at <= w.end for w in slow) for e in h.procs)
    assert starts >= 200, starts
    assert notes >= {"exit 0", "exit 1", "supervisor", "deadman", "kill requested"}, notes
    assert conflicts >= 1 and deleted >= 5 and edited >= 5, (conflicts, deleted, edited)
    assert slow_starts >= 10, slow_starts
