"""The worker's decisions (``scheduler.worker.decide``), without a store or an event loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.claim import LockHolder, RunRecord
from scheduler.executor import RunResult
from scheduler.plan import MANUAL_SUFFIX, Timetable, occurrence_id, rank_workers
from scheduler.worker import decide
from scheduler.worker.decide import Busy, Compaction, Orphan, Sweep

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def occ(seconds: float = 0) -> str:
    return occurrence_id(T0 + timedelta(seconds=seconds))


def holder(occurrence: str) -> bytes:
    return LockHolder("w1", "h", 1, occurrence, "r1", 0.0).encode()


def record(status: str, occurrence: str | None = None, run_id: str = "r1") -> RunRecord:
    return RunRecord(job="j", occurrence=occurrence or occ(), status=status, run_id=run_id)


def result(exit_code: int | None = 0, timed_out: bool = False, killed: bool = False
           ) -> RunResult:
    return RunResult(pid=1, exit_code=exit_code, signal=None, timed_out=timed_out,
                     killed=killed, kill_reason=None, started_at=T0, finished_at=T0,
                     duration=0.0, output_tail="", output_bytes=0, output_truncated=False)


# ------------------------------------------------------------------ firing
def test_claim_position_is_the_rendezvous_rank_among_the_eligible() -> None:
    workers = ["a", "b", "c", "d"]
    for i in range(50):
        o = occ(i)
        ranked = rank_workers("j", o, workers)
        assert [decide.claim_position("j", o, workers, w) for w in ranked] == [0, 1, 2, 3]
    assert decide.claim_position("j", occ(), workers, "e") is None


@pytest.mark.parametrize(("held", "occurrence", "expected"), [
    (None, occ(), False),
    (holder(occ()), occ(), True),
    (holder(occ(60)), occ(), False),
    (b"not json", occ(), False),
    (b'{"worker": "w1"}', occ(), False),
])
def test_taken(held: bytes | None, occurrence: str, expected: bool) -> None:
    assert decide.taken(held, occurrence) is expected


@pytest.mark.parametrize(("concurrency", "held", "occurrence", "expected"), [
    ("forbid", holder(occ(60)), occ(), occ(60)),      # a later one was claimed first
    ("forbid", holder(occ()), occ(), None),           # this one
    ("forbid", holder(occ(-60)), occ(), None),        # an earlier one
    ("forbid", None, occ(), None),
    ("forbid", b"garbage", occ(), None),
    ("allow", holder(occ(60)), occ(), None),          # allow runs in any order
    ("replace", holder(occ(60)), occ(), occ(60)),     # replace runs in order too
    ("replace", holder(occ(-60)), occ(), None),       # an earlier one: replaced
    ("replace", holder(occ(60)), occ() + MANUAL_SUFFIX + "0001", None),  # manual: replaces
    ("forbid", holder(occ(60)), occ() + MANUAL_SUFFIX + "0001", occ(60)),
])
def test_later_claimed(concurrency: str, held: bytes | None, occurrence: str,
                       expected: str | None) -> None:
    assert decide.later_claimed(concurrency, held, occurrence) == expected


@pytest.mark.parametrize(("concurrency", "held", "expected"), [
    ("replace", occ(60), occ(60)),   # a waiter older than the holder: skipped, no kill
    ("replace", occ(-60), None),     # the holder is older: kill it and wait
    ("replace", occ(), None),
    ("replace", None, None),
    ("forbid", occ(60), occ(60)),
    ("allow", occ(60), None),
])
def test_later_occurrence(concurrency: str, held: str | None, expected: str | None) -> None:
    assert decide.later_occurrence(concurrency, held, occ()) == expected


@pytest.mark.parametrize(("concurrency", "occurrence", "nxt", "now", "expected"), [
    ("replace", occ(), occ(2), 2.0, occ(2)),    # the next one is due: it replaces
    ("replace", occ(), occ(2), 5.0, occ(2)),
    ("replace", occ(), occ(2), 1.9, None),      # still the newest due occurrence
    ("replace", occ(), None, 5.0, None),        # the next one unknown (a timer's first)
    ("replace", occ() + MANUAL_SUFFIX + "-0001", occ(2), 5.0, None),  # manual: as asked
    ("forbid", occ(), occ(2), 5.0, None),       # forbid skips by its own rule
    ("allow", occ(), occ(2), 5.0, None),
])
def test_superseded(concurrency: str, occurrence: str, nxt: str | None, now: float,
                    expected: str | None) -> None:
    assert decide.superseded(concurrency, occurrence, nxt,
                             T0 + timedelta(seconds=now)) == expected


@pytest.mark.parametrize(("concurrency", "early", "holder_known", "expected"), [
    ("forbid", 0.2, True, Busy.WAIT_FOR_INSTANT),
    ("forbid", 0.2, False, Busy.WAIT_FOR_INSTANT),
    ("forbid", 0.0, True, Busy.SKIP),
    ("forbid", -1.0, True, Busy.SKIP),
    ("forbid", -1.0, False, Busy.WAIT),
    ("replace", 0.2, True, Busy.WAIT_FOR_INSTANT),
    ("replace", 0.2, False, Busy.WAIT),
    ("replace", 0.0, True, Busy.KILL_AND_WAIT),
    ("replace", -1.0, False, Busy.WAIT),
    ("allow", 0.2, True, Busy.WAIT),
    ("allow", -1.0, True, Busy.WAIT),
])
def test_when_busy(concurrency: str, early: float, holder_known: bool, expected: Busy) -> None:
    assert decide.when_busy(concurrency, early, holder_known) is expected


def test_split_missed_records_now_only_what_is_past_its_deadline() -> None:
    instants = [T0 + timedelta(seconds=s) for s in (0, 10, 20, 30)]
    now, later = decide.split_missed(instants, T0 + timedelta(seconds=20))
    assert now == instants[:2]
    assert later == instants[2:]


@pytest.mark.parametrize(("suspended", "resumed", "expected"), [
    (5, 200, 180),         # several missed: the latest is recorded
    (5, 60, 60),           # one due at the resume instant itself
    (5, 59, None),         # none due while suspended
    (0, 30, None),         # the occurrence at the suspension instant is not missed
    (-3600 * 24 * 30, 1, 0),  # a month suspended: found without walking every minute
])
def test_missed_while_suspended(suspended: float, resumed: float,
                                expected: float | None) -> None:
    every_minute = Timetable.parse("* * * * *")
    got = decide.missed_while_suspended(every_minute, T0 + timedelta(seconds=suspended),
                                        T0 + timedelta(seconds=resumed))
    assert got == (None if expected is None else T0 + timedelta(seconds=expected))


@pytest.mark.parametrize(("occurrence", "expected"), [
    (occ(1), True), (occ(0), False), (occ(-1), False), ("not-an-occurrence", False)])
def test_not_due(occurrence: str, expected: bool) -> None:
    assert decide.not_due(occurrence, T0) is expected


# ------------------------------------------------------------------ running
@pytest.mark.parametrize(("res", "kill_reason", "expected"), [
    (result(0), None, "succeeded"),
    (result(1), None, "failed"),
    (result(None), None, "failed"),                   # ended by a signal nobody sent
    (result(None, timed_out=True), None, "timeout"),
    (result(None, killed=True), None, "killed"),
    (result(0), "kill requested: x", "killed"),
    (result(0), "deadman: session lease lost", "lost"),
    (result(None, timed_out=True), "deadman: session lease lost", "lost"),
])
def test_end_status(res: RunResult, kill_reason: str | None, expected: str) -> None:
    assert decide.end_status(res, kill_reason) == expected


@pytest.mark.parametrize(("kill_reason", "expected"), [
    (None, "lost"), ("deadman: session lease lost", "lost"),
    ("kill requested: x", "killed"), ("fenced out", "killed")])
def test_not_started_status(kill_reason: str | None, expected: str) -> None:
    assert decide.not_started_status(kill_reason) == expected


@pytest.mark.parametrize(("status", "attempt", "retries", "kill_reason", "stopping",
                          "expected"), [
    ("failed", 1, 1, None, False, True),
    ("timeout", 1, 1, None, False, True),
    ("failed", 2, 1, None, False, False),             # retries used up
    ("failed", 1, 0, None, False, False),
    ("succeeded", 1, 3, None, False, False),
    ("killed", 1, 3, None, False, False),
    ("lost", 1, 3, None, False, False),
    ("failed", 1, 3, "kill requested", False, False),
    ("failed", 1, 3, None, True, False),              # a stopping worker does not retry
])
def test_retry_due(status: str, attempt: int, retries: int, kill_reason: str | None,
                   stopping: bool, expected: bool) -> None:
    assert decide.retry_due(status, attempt, retries, kill_reason, stopping) is expected


# ------------------------------------------------------------------ reaping
def _first(me: str, holder_name: str, lease: int, eligible: list[str],
           live: dict[str, int], key: str = "k") -> bool:
    return decide.first_for("j", key, holder_name, lease, me=me, my_lease=live.get(me, 0),
                            eligible=eligible, live=live)


@pytest.mark.parametrize(("me", "expected"), [("a", False), ("b", True)])
def test_first_for_leaves_the_holders_session_out(me: str, expected: bool) -> None:
    for key in ("k1", "k2", "k3"):
        assert _first(me, "a", 5, ["a", "b"], {"a": 5, "b": 6}, key) is expected


def test_first_for_counts_a_holder_that_restarted_under_a_new_session() -> None:
    live = {"a": 7, "b": 6}
    picks = {key: [w for w in live if _first(w, "a", 5, ["a", "b"], live, key)]
             for key in (f"k{i}" for i in range(40))}
    assert all(len(p) == 1 for p in picks.values()), picks
    assert {p[0] for p in picks.values()} == {"a", "b"}   # the restarted holder takes turns


def test_first_for_a_lease_unknown_leaves_the_holder_out() -> None:
    assert not any(_first("a", "a", 0, ["a", "b"], {"a": 7, "b": 6}, f"k{i}")
                   for i in range(20))


def test_first_for_falls_back_to_all_live_workers_when_none_eligible_is_left() -> None:
    live = {"a": 5, "b": 6, "c": 8}
    for i in range(20):
        picks = [w for w in live if _first(w, "a", 5, ["a"], live, f"k{i}")]
        assert len(picks) == 1 and picks[0] in ("b", "c")


def test_first_for_with_nobody_else_left_is_nobody() -> None:
    assert not _first("a", "a", 5, ["a"], {"a": 5})


def test_exactly_one_worker_is_first_for_each_run() -> None:
    live = {"a": 1, "b": 2, "c": 3, "d": 4}
    for i in range(100):
        dead = "abcd"[i % 4]
        alive = {w: lease for w, lease in live.items() if w != dead}
        picks = [w for w in alive if _first(w, dead, live[dead], sorted(alive), alive,
                                            f"k{i}")]
        assert len(picks) == 1


def test_settle_parked() -> None:
    parked = {
        5: [("j", b"h", 10, 100), ("k", b"h", 11, 120)],   # one older than the read
        6: [("j", b"h", 12, 90)],                          # lease gone: check
        7: [("m", b"h", 13, 95)],                          # lease live: a normal finish
    }
    keep, check = decide.settle_parked(parked, 110, live={5, 7})
    assert keep == {5: [("k", b"h", 11, 120)]}
    assert check == [("j", b"h", 12, 90)]
    keep, check = decide.settle_parked(parked, 110, live=set())
    assert keep == {5: [("k", b"h", 11, 120)]}
    assert sorted(check) == [("j", b"h", 10, 100), ("j", b"h", 12, 90), ("m", b"h", 13, 95)]


@pytest.mark.parametrize(("on_lost", "started_at", "eligible", "left", "expected"), [
    ("rerun", 0.0, True, 5.0, True),
    ("rerun", 0.0, True, 0.0, True),
    ("rerun", 0.0, True, -0.1, False),                # past its starting deadline
    ("rerun", 0.0, True, None, False),
    ("rerun", 1.0, True, 5.0, False),                 # it started: never run twice
    ("rerun", 0.0, False, 5.0, False),                # not this worker's to run
    ("record", 0.0, True, 5.0, False),
])
def test_rerun_due(on_lost: str, started_at: float, eligible: bool, left: float | None,
                   expected: bool) -> None:
    assert decide.rerun_due(on_lost, started_at, eligible, left) is expected


@pytest.mark.parametrize(("raw", "expected"), [
    (record("claimed").encode(), "claimed"),
    (record("running").encode(), "running"),
    (record("retrying").encode(), "retrying"),
    (record("succeeded").encode(), None),
    (record("lost").encode(), None),
    (b'{"status": "running"}', None),                 # active bytes, not a record
    (RunRecord(job="j", occurrence=occ(), status="succeeded",  # active only inside
               attempts=[{"status": "running"}]).encode(), None),
    (b"junk", None),
])
def test_active_record(raw: bytes, expected: str | None) -> None:
    rec = decide.active_record(raw)
    assert (rec.status if rec is not None else None) == expected


def _claimed(lease: int, claimed_at: float = 0.0) -> RunRecord:
    return RunRecord(job="j", occurrence=occ(), status="running", lease=lease,
                     claimed_at=claimed_at)


@pytest.mark.parametrize(("rec", "known", "here", "alive", "now", "expected"), [
    (_claimed(5), True, False, {}, 0.0, Sweep.SKIP),           # lease 5 in the view
    (_claimed(6), True, False, {}, 0.0, Sweep.ASK),            # unknown lease: ask
    (_claimed(6), True, False, {6: True}, 0.0, Sweep.SKIP),
    (_claimed(6), True, False, {6: False}, 0.0, Sweep.SUSPECT),
    (_claimed(6), False, False, {6: False}, 0.0, Sweep.SKIP),  # a job unknown here
    (_claimed(6), True, True, {6: False}, 0.0, Sweep.SKIP),    # this worker runs it
    (_claimed(0, claimed_at=100.0), True, False, {}, 119.0, Sweep.SKIP),  # < 2 TTLs old
    (_claimed(0, claimed_at=100.0), True, False, {}, 120.0, Sweep.SUSPECT),
])
def test_sweep_verdict(rec: RunRecord, known: bool, here: bool, alive: dict[int, bool],
                       now: float, expected: Sweep) -> None:
    assert decide.sweep_verdict(rec, known_job=known, running_here=here, live={5},
                                alive=alive, now=now, session_ttl=10) is expected


@pytest.mark.parametrize(("rec", "expected"), [
    (None, Orphan.RELEASE),
    (record("claimed"), Orphan.ABANDON),
    (record("running"), Orphan.LOST),
    (record("retrying"), Orphan.LOST),
    (record("succeeded"), Orphan.RELEASE),
    (record("running", run_id="other"), Orphan.RELEASE),
])
def test_orphan_action(rec: RunRecord | None, expected: Orphan) -> None:
    assert decide.orphan_action("r1", rec) is expected


# ------------------------------------------------------------------ housekeeping
def _records(*spec: tuple[float, str]) -> list[tuple[str, bytes]]:
    return [(occ(s), record(status, occ(s)).encode()) for s, status in spec]


@pytest.mark.parametrize(("records", "count", "limit", "batch", "expected"), [
    (_records((0, "succeeded"), (10, "failed"), (20, "succeeded")), 3, 1, 10, [0, 1]),
    (_records((0, "succeeded"), (10, "failed")), 2, 2, 10, []),            # within limit
    (_records((0, "running"), (10, "failed")), 4, 1, 10, [1]),             # active kept
    (_records((0, "succeeded"), (100, "succeeded"), (110, "failed")), 3, 0, 10, [0]),
    (_records((0, "succeeded"), (10, "failed"), (20, "succeeded")), 3, 0, 2, [0, 1]),
    ([("not-an-occ", b"{}"), *_records((10, "failed"))], 2, 0, 10, [1]),
    # a key that parses as an instant but is no occurrence id (it would name log files)
    ([(occ() + MANUAL_SUFFIX + "../x", b"{}"), *_records((10, "failed"))], 2, 0, 10, [1]),
    # key order is time order: the first record too young ends the look
    (_records((0, "succeeded"), (100, "succeeded"), (10, "failed")), 3, 0, 10, [0]),
])
def test_prunable(records: list[tuple[str, bytes]], count: int, limit: int, batch: int,
                  expected: list[int]) -> None:
    horizon = T0 + timedelta(seconds=60)                    # at or after: too young
    assert decide.prunable(records, count, limit, horizon, batch) == expected


def test_compaction_targets_the_newest_sample_past_retention() -> None:
    c = Compaction(10.0, [(0.0, 100), (5.0, 150), (12.0, 200)])
    assert c.target(9.0) == 0
    assert c.target(15.0) == 150
    assert c.samples == [(12.0, 200)]
    assert c.target(15.0) == 0


def test_one_worker_compacts_per_period() -> None:
    workers = {"a", "b", "c"}
    turns = [str(t) for t in range(60)]
    who = [[w for w in workers if decide.compacts(w, workers - {w}, t)] for t in turns]
    assert all(len(w) == 1 for w in who)
    assert {w[0] for w in who} == workers


@pytest.mark.parametrize(("held", "expected"), [
    (occ(-60), f"previous run {occ(-60)} still running"),
    (occ(60), f"a later occurrence {occ(60)} was claimed first"),  # claims raced (outage)
])
def test_busy_note_names_what_holds_the_lock(held: str, expected: str) -> None:
    assert decide.busy_note(occ(), held) == expected
