"""The checks have teeth: broken variants are caught within a bounded number of seeds.

Core bugs are switched on through ``Config.bugs`` (the core implements them); driver,
disk and applier bugs are injected by the simulator itself (``SimOptions.sim_bugs``).
Each test walks seeds from 0 and requires a *safety* failure (an invariant or the
linearizability check; not liveness, not an exception) within its bound.
"""

from __future__ import annotations

import pytest

from tests.sim.runner import SimResult, run_seed


def first_violation(
    bound: int, *, bugs: frozenset[str] = frozenset(), sim_bugs: frozenset[str] = frozenset()
) -> SimResult | None:
    for seed in range(bound):
        res = run_seed(seed, bugs=bugs, sim_bugs=sim_bugs)
        if not res.ok and not res.failure.startswith(("liveness", "exception")):
            return res
    return None


@pytest.mark.parametrize(
    ("bug", "bound", "expect"),
    [
        ("forget_vote", 40, "durability"),
        ("ack_before_fsync", 100, "durability"),
        ("no_dedup", 200, "not linearizable"),  # needs a duplicated PROP: dup > 0 seeds
        ("stale_local_read", 40, "not linearizable"),
    ],
)
def test_sim_bug_is_caught(bug: str, bound: int, expect: str) -> None:
    res = first_violation(bound, sim_bugs=frozenset({bug}))
    assert res is not None, f"{bug}: no violation in {bound} seeds"
    assert expect in res.failure, res.report(trace_lines=0)


@pytest.mark.parametrize(
    ("bug", "bound", "expect"),
    [
        ("vote_for_shorter_log", 60, "leader completeness"),
        ("commit_old_term_by_count", 60, "leader commit rule"),
    ],
)
def test_core_bug_is_caught(bug: str, bound: int, expect: str) -> None:
    res = first_violation(bound, bugs=frozenset({bug}))
    assert res is not None, f"{bug}: no violation in {bound} seeds"
    assert expect in res.failure, res.report(trace_lines=0)
