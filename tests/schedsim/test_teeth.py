"""Teeth: each injected bug is caught by the checker for the promise it breaks, within
the CI seeds (the first seeds of 0..299, stopping at the first catch)."""

from __future__ import annotations

import pytest

from tests.schedsim.checks import CHECKS
from tests.schedsim.runner import run_seed

CAUGHT_BY = {
    "no_lock_compare": "no_overlap",
    "skip_deadman": "no_overlap",
    "reuse_token": "fencing",
    "queue_forbid": "forbid_order",
}
WITHIN = 300


@pytest.mark.parametrize("bug", sorted(CAUGHT_BY))
def test_bug_is_caught(bug: str) -> None:
    checker = CHECKS[CAUGHT_BY[bug]]
    for seed in range(WITHIN):
        found = checker(run_seed(seed, frozenset({bug})))
        if found:
            print(f"{bug}: caught by {CAUGHT_BY[bug]} at seed {seed}: {found[0]}")
            return
    pytest.fail(f"{bug} not caught by {CAUGHT_BY[bug]} in seeds 0..{WITHIN - 1}")


def test_the_checkers_pass_without_the_bug() -> None:
    """The seeds that catch each bug pass when it is not injected (the checkers judge the
    bug, not the seed)."""
    for seed in (3, 14, 15):
        h = run_seed(seed)
        assert all(not fn(h) for fn in CHECKS.values()), seed
