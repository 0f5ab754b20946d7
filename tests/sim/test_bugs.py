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
        ("release_to_newest", 60, "restart after WAL release"),
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


def test_both_checkers_catch_stale_reads_in_simulated_histories() -> None:
    """Cross-check on real simulator histories: the revision check and WGL (which ignores
    revisions) each reject the history of a run that serves reads locally."""
    from tests.helpers.linearizability import check_revisions, check_wgl
    from tests.sim.kv import INITIAL_REVISION

    caught = 0
    for seed in range(40):
        res = run_seed(seed, sim_bugs=frozenset({"stale_local_read"}))
        if not res.failure.startswith("not linearizable"):
            continue
        assert check_revisions(res.history, initial_revision=INITIAL_REVISION).ok is False
        if check_wgl(res.history).ok is False:
            caught += 1
        if caught >= 3:
            return
    raise AssertionError(f"WGL rejected only {caught} stale-read histories in 40 seeds")
