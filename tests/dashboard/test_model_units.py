"""The read model's run index: each job's last finished run and the runs in progress,
kept one event at a time (claims ahead, retries and pruning included)."""

from __future__ import annotations

from scheduler.claim import RunRecord
from scheduler.dashboard.cache import RunIndex


def rec(occ: str, status: str, job: str = "j") -> RunRecord:
    return RunRecord(job=job, occurrence=occ, status=status)


def test_last_is_the_latest_finished_run_not_a_claim_ahead() -> None:
    idx = RunIndex()
    idx.keep(rec("20261122T013000Z", "succeeded"))
    idx.keep(rec("20261122T013100Z", "claimed"))  # claimed ahead of its instant
    assert idx.last["j"].occurrence == "20261122T013000Z"
    assert set(idx.active) == {("j", "20261122T013100Z")}
    idx.keep(rec("20261122T013100Z", "failed"))
    assert (idx.last["j"].occurrence, idx.last["j"].status) == ("20261122T013100Z", "failed")
    assert idx.active == {}


def test_an_older_run_finishing_late_does_not_replace_the_last() -> None:
    idx = RunIndex()
    idx.keep(rec("20261122T013100Z", "succeeded"))
    idx.keep(rec("20261122T013000Z", "timeout"))
    assert idx.last["j"].occurrence == "20261122T013100Z"


def test_pruning_the_last_run_falls_back_to_the_one_before() -> None:
    idx = RunIndex()
    idx.keep(rec("20261122T013000Z", "failed"))
    idx.keep(rec("20261122T013100Z", "succeeded"))
    idx.keep(rec("20261122T013200Z", "running"))
    idx.drop("j", "20261122T013100Z")
    assert idx.last["j"].occurrence == "20261122T013000Z"
    idx.drop("j", "20261122T013000Z")
    assert "j" not in idx.last and set(idx.runs["j"]) == {"20261122T013200Z"}
    idx.drop("j", "20261122T013200Z")
    assert idx.runs == {} and idx.active == {}


def test_a_retry_of_the_last_run_makes_it_active_again() -> None:
    idx = RunIndex()
    idx.keep(rec("20261122T013000Z", "succeeded"))
    idx.keep(rec("20261122T013100Z", "failed"))
    idx.keep(rec("20261122T013100Z", "retrying"))
    assert idx.last["j"].occurrence == "20261122T013000Z"
    assert ("j", "20261122T013100Z") in idx.active
