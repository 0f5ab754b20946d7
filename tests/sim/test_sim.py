"""The seed sweep: every seed runs a whole simulation (safety, liveness, history check).

``SIM_SEED=n`` replays exactly one seed with the per-transition trace (printed on failure,
and with ``-s`` on success too); ``SIM_BUGS=a,b`` adds injected bugs to that replay.
Long sweeps: ``make sim SEEDS=1000..5999``.
"""

from __future__ import annotations

import os

import pytest

from tests.sim.known import OPEN
from tests.sim.options import draw_options
from tests.sim.runner import run, run_seed
from tests.sim.sweep import split_bugs

CI_SEEDS = range(0, 300)
REPLAY = os.environ.get("SIM_SEED")


def _seeds() -> list[object]:
    if REPLAY:
        return [int(REPLAY)]
    return [
        pytest.param(s, marks=pytest.mark.xfail(reason=f"open finding {OPEN[s]}"))
        if s in OPEN
        else s
        for s in CI_SEEDS
    ]


@pytest.mark.parametrize("seed", _seeds())
def test_seed(seed: int) -> None:
    bugs, sim_bugs = (
        split_bugs(os.environ.get("SIM_BUGS", "")) if REPLAY else (frozenset(), frozenset())
    )
    res = run_seed(seed, bugs=bugs, sim_bugs=sim_bugs, trace=bool(REPLAY))
    if REPLAY:
        print(res.report(trace_lines=0))
    if not res.ok:
        if not REPLAY:  # replay the same run with the trace on, for the report
            res = run_seed(seed, trace=True)
        pytest.fail(res.report(trace_lines=0 if REPLAY else 300), pytrace=False)


def test_same_seed_same_run() -> None:
    """Replays are exact: same trace twice; tracing does not change the run."""
    for seed in (3, 4):
        a = run_seed(seed, trace=True)
        b = run_seed(seed, trace=True)
        c = run_seed(seed)
        assert a.trace == b.trace
        assert len(a.trace) > 100
        assert a.stats == b.stats == c.stats
        assert [o.describe() for o in a.history] == [o.describe() for o in c.history]


def test_different_seeds_differ() -> None:
    a, b = run_seed(1), run_seed(2)
    assert a.options != b.options
    assert a.stats != b.stats


def test_swarm_covers_the_fault_space() -> None:
    """Across the CI range, every knob is exercised both on and off."""
    opts = [draw_options(s) for s in CI_SEEDS]
    assert {o.voters for o in opts} == {3, 5}
    assert any(o.spares for o in opts) and any(not o.spares for o in opts)
    assert any(o.removals for o in opts)
    assert any(o.loss > 0 for o in opts) and any(o.loss == 0 for o in opts)
    assert any(o.dup > 0 for o in opts)
    assert any(o.partition_every for o in opts) and any(o.asymmetric for o in opts)
    assert any(o.crash_every for o in opts) and any(o.crash_points for o in opts)
    assert any(o.snapshot_every for o in opts) and any(o.read_index for o in opts)
    assert any(o.max_size_per_msg == 1 for o in opts) and any(o.max_inflight == 1 for o in opts)
    assert any(not o.pre_vote for o in opts) and any(not o.check_quorum for o in opts)
    assert any(o.target_leader for o in opts) and any(o.torn_writes for o in opts)
    assert any(o.churn_every for o in opts) and any(o.transfer_every for o in opts)
    assert any(o.early_campaign for o in opts) and any(not o.early_campaign for o in opts)
    assert any(o.false_alarm_every for o in opts)


def test_sweep_exercises_the_core() -> None:
    """A sample of seeds really goes through elections, crashes, snapshots, conf changes,
    ReadIndex reads and indeterminate client ops (the sweep is not vacuous)."""
    totals: dict[str, int] = {}
    for seed in range(40):
        res = run_seed(seed)
        for k, v in res.stats.items():
            totals[k] = totals.get(k, 0) + v
    for key in (
        "elections", "crashes", "crash_points", "restarts", "snapshots_taken",
        "snapshots_installed", "conf_changes", "partitions", "ops_ok", "ops_fail",
        "ops_unknown", "net_lost", "net_duplicated", "net_blocked", "transfers",
        "leader_forgotten", "early_campaigns",
    ):  # fmt: skip
        assert totals.get(key, 0) > 0, f"no {key} in 40 seeds: {totals}"


def test_replay_env_names_a_seed() -> None:
    res = run_seed(7)
    assert f"SIM_SEED={res.seed}" in res.replay_command()
    bad = run(draw_options(7).with_bugs(frozenset(), frozenset({"forget_vote"})))
    assert "SIM_BUGS=forget_vote" in bad.replay_command()


def test_sweep_cli_reports_and_exits(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.sim.sweep import main, parse_range

    assert parse_range("3..5") == range(3, 6)
    assert parse_range("7") == range(7, 8)
    assert main(["0..2", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("3 passed, 0 failed")
    assert main(["4..5", "--jobs", "2", "--bugs", "stale_local_read"]) == 1
    out = capsys.readouterr().out
    assert "SIM_SEED=4 SIM_BUGS=stale_local_read" in out
    assert "options: seed=4" in out
    last = out.strip().splitlines()[-1]
    assert last.endswith(" failed") and not last.endswith(" 0 failed"), last
