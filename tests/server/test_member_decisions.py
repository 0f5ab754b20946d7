"""The member's decisions around its Ready handling, as the server and the simulator both
perform them: snapshots, compaction and WAL release (``member_snap``), its waiters
(``member_waiters``) and its timers (``MemberCore.next_wake``/``wake``)."""

from __future__ import annotations

import random

from coord.raft import (
    Config,
    ConfState,
    Entry,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    StateRole,
)
from coord.server.member_core import EarlyCampaign
from coord.server.member_ready import CampaignedEarly, LeaderLost, MemberCore, Persist
from coord.server.member_snap import Compact, ReleaseWal, SnapshotPlan, SnapshotPolicy
from coord.server.member_waiters import Waiters


def _log(last: int) -> MemoryStorage:
    st = MemoryStorage()
    st.append([Entry(1, i, data=b"x" * 10) for i in range(1, last + 1)])
    return st


def test_a_snapshot_is_due_every_count_entries_and_not_twice_for_the_same_ones() -> None:
    plan = SnapshotPlan(SnapshotPolicy(count=10, max_bytes=1000, keep=2, keep_bytes=1000))
    assert plan.due(9, 0) is None
    take = plan.due(10, 0)
    assert take is not None and take.index == 10
    plan.started(10)
    assert plan.due(12, 0) is None  # taken (being saved): not again for 1..10
    assert plan.due(12, 1000) is not None  # but the bytes applied since count
    assert SnapshotPlan(SnapshotPolicy(0, 10, 0, 0)).due(50, 10**6) is None  # never


def test_a_saved_snapshot_compacts_keeping_a_few_entries_and_releases_before_the_next() -> None:
    plan = SnapshotPlan(SnapshotPolicy(count=10, max_bytes=1000, keep=2, keep_bytes=1000))
    plan.wrote({i: 100 + i for i in range(1, 13)})  # entry i in WAL record 100 + i
    plan.started(10)
    assert sorted(plan.entry_seq) == [11, 12]  # the records the snapshot covers are forgotten
    st = _log(12)
    st.create_snapshot(10, ConfState((1,)), b"")
    compact, release = plan.saved(10, 500, st)
    assert compact == Compact(8) and release == ReleaseWal(111)  # the record of entry 11
    assert plan.size == 500


def test_an_unwritten_next_entry_keeps_the_wal_from_the_snapshot_entry_on() -> None:
    plan = SnapshotPlan(SnapshotPolicy(10, 1000, 0, 1000))
    plan.wrote({9: 40, 10: 41})  # 11 may be in the WAL already, its record not yet known
    plan.started(10)
    st = _log(10)
    st.create_snapshot(10, ConfState((1,)), b"")
    assert plan.saved(10, 1, st)[1] == ReleaseWal(41)
    plan.started(20)  # nothing known: release nothing, only start a new segment
    st = _log(20)
    st.create_snapshot(20, ConfState((1,)), b"")
    assert plan.saved(20, 1, st)[1] == ReleaseWal(0)


def test_waiters_are_answered_when_applied_and_failed_on_leader_change_or_deadline() -> None:
    w: Waiters[str] = Waiters(timeout=7.0)
    w.bound("p1", 0.0)
    w.proposed(1, "p1")
    w.proposed(2, "p2")
    w.wait_applied(5, "r5")
    w.wait_applied(3, "r3")
    assert w.request_applied(1) == "p1" and w.request_applied(9) is None
    assert w.applied(4) == ["r3"] and w.applied(4) == []
    assert w.dropped([2, 7]) == ["p2"]
    fail = w.leader_changed()
    assert fail is not None and fail.reason == "leader changed"
    assert list(fail.waiters) == ["p1", "p2"]
    assert w.expired(6.9) is None
    late = w.expired(7.0)
    assert late is not None and list(late.waiters) == ["p1"] and late.reason == "timed out"
    assert not w.deadlines
    assert list(w.drain().waiters) == ["p1", "p2", "r5"]


def test_waiters_no_longer_live_are_neither_failed_nor_timed() -> None:
    done = {"a"}
    w: Waiters[str] = Waiters(1.0, live=lambda x: x not in done)
    w.bound("a", 0.0)
    w.bound("b", 0.0)
    w.proposed(1, "a")
    assert w.leader_changed() is None
    late = w.expired(5.0)
    assert late is not None and list(late.waiters) == ["b"]


def _follower_of(leader: int) -> MemberCore:
    """Member 1 of three, following ``leader`` (its Readys handled)."""
    storage = MemoryStorage()
    rn = RawNode(Config(id=1, rng=random.Random(1), election_tick=10, heartbeat_tick=1,
                        pre_vote=True, check_quorum=True), storage)
    rn.bootstrap([1, 2, 3])
    core = MemberCore(rn, storage, early=EarlyCampaign(lambda: rn, 0.1, random.Random(3)))
    rn.step(Message(MessageType.HEARTBEAT, 1, leader, term=2))
    while (actions := core.ready()) is not None:
        for a in actions:
            if isinstance(a, Persist):
                core.persisted(a)
        core.advance()
    return core


def test_the_member_s_timers_forget_a_silent_leader_then_campaign() -> None:
    core = _follower_of(2)
    assert core.rn.lead == 2 and core.next_wake() is None
    core.leader_stream_lost(3, 10.0)  # not its leader's stream: nothing to watch
    assert core.next_wake() is None
    core.leader_stream_lost(2, 10.0)
    due = core.next_wake()
    assert due is not None and abs(due - 10.3) < 1e-9  # CONFIRM_LOSS_TICKS
    assert core.wake(10.2, lambda peer: 0.0) == []  # not yet due
    lost = core.wake(due, lambda peer: 0.0)
    assert len(lost) == 1 and isinstance(lost[0], LeaderLost) and lost[0].leader == 2
    assert core.rn.lead == 0
    at = core.next_wake()
    assert at is not None and at == lost[0].campaign_at and due <= at <= due + 0.4
    assert core.wake(at, lambda peer: 0.0) == [CampaignedEarly()]
    assert core.rn.role in (StateRole.PRE_CANDIDATE, StateRole.CANDIDATE)
    assert core.next_wake() is None


def test_a_leader_heard_after_its_stream_broke_is_kept() -> None:
    core = _follower_of(2)
    core.leader_stream_lost(2, 10.0)
    due = core.next_wake()
    assert due is not None
    assert core.wake(due, lambda peer: 10.1) == []  # it reconnected and spoke
    assert core.rn.lead == 2 and core.next_wake() is None
