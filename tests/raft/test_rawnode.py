"""The RawNode API and the Ready contract."""

from __future__ import annotations

import random

import pytest

from coord.raft import (
    Config,
    ConfState,
    HardState,
    InvalidConfig,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDropped,
    RaftError,
    RawNode,
    Ready,
    StateRole,
    StepLocalMessage,
)
from tests.raft.harness import Env, FixedRandom


def new_node(nid: int = 1, storage: MemoryStorage | None = None, **kw: object) -> RawNode:
    return RawNode(Config(id=nid, rng=FixedRandom(nid), **kw), storage or MemoryStorage())  # type: ignore[arg-type]


def handle(rn: RawNode, st: MemoryStorage) -> Ready:
    """Run one Ready through the contract with no network."""
    rd = rn.ready()
    if rd.snapshot is not None:
        st.apply_snapshot(rd.snapshot)
    st.append(rd.entries)
    if rd.hard_state is not None:
        st.set_hard_state(rd.hard_state)
    rn.advance(rd)
    return rd


def single_leader() -> tuple[RawNode, MemoryStorage]:
    st = MemoryStorage()
    rn = new_node(1, st)
    rn.bootstrap([1])
    rn.campaign()  # allowed at once; its own vote counts once the snapshot is persisted
    while rn.has_ready():
        handle(rn, st)
    assert rn._raft.state == StateRole.LEADER
    return rn, st


def test_config_validation() -> None:
    rng = random.Random(0)
    with pytest.raises(InvalidConfig):
        Config(id=0, rng=rng).validate()
    with pytest.raises(InvalidConfig):
        Config(id=1, rng=rng, election_tick=1, heartbeat_tick=1).validate()
    with pytest.raises(InvalidConfig):
        Config(id=1, rng=rng, bugs=frozenset({"nope"})).validate()
    with pytest.raises(InvalidConfig):
        Config(id=1, rng=rng, check_quorum=False, read_only=1).validate()  # type: ignore[arg-type]
    Config(id=1, rng=rng, bugs=frozenset({"vote_for_shorter_log"})).validate()


def test_bootstrap_first_ready_carries_snapshot() -> None:
    st = MemoryStorage()
    rn = new_node(1, st)
    rn.bootstrap([3, 1, 2])
    rd = rn.ready()
    assert rd.snapshot is not None
    assert rd.snapshot.metadata.index == 1 and rd.snapshot.metadata.term == 1
    assert rd.snapshot.metadata.conf_state == ConfState((1, 2, 3))
    assert rd.hard_state == HardState(term=1, vote=0, commit=1)
    assert rd.must_sync and not rd.committed_entries
    st.apply_snapshot(rd.snapshot)
    st.set_hard_state(rd.hard_state)
    rn.advance(rd)
    assert rn.status().applied == 1
    with pytest.raises(RaftError):
        rn.bootstrap([1])  # not empty any more


def test_single_node_elects_itself_and_commits() -> None:
    rn, st = single_leader()
    rn.propose(b"x")
    rd = handle(rn, st)
    assert [e.data for e in rd.entries] == [b"x"]
    assert not rd.committed_entries  # self-ack is stepped in only by advance()
    rd = handle(rn, st)
    assert [e.data for e in rd.committed_entries] == [b"x"]
    assert not rd.must_sync  # only the commit index changed
    assert not rn.has_ready()


def test_leader_counts_itself_only_after_advance() -> None:
    env = Env()
    env.add_nodes(3, voters=(1, 2, 3))
    env.elect(1)
    leader = env.nodes[1].rn
    leader.propose(b"x")
    rd = leader.ready()
    # APPs may leave before persisting; there is no self-addressed message in the Ready.
    assert {m.to for m in rd.messages} == {2, 3}
    assert all(m.to != 1 for m in rd.messages + rd.messages_after_persist)
    env.queue.extend(rd.messages)
    # One follower acks before the leader advanced: 1 of 3 acks is not a quorum.
    env.deliver(2)
    env.process_ready(2)
    env.deliver(1)
    assert leader._raft.trk.progress[2].match == rd.entries[-1].index
    committed_before = leader._raft.log.committed
    assert committed_before < rd.entries[-1].index
    env.nodes[1].storage.append(rd.entries)
    leader.advance(rd)
    assert leader._raft.log.committed == rd.entries[-1].index > committed_before


def test_only_one_outstanding_ready() -> None:
    rn, st = single_leader()
    rn.propose(b"x")
    rd = rn.ready()
    assert not rn.has_ready()
    with pytest.raises(RaftError):
        rn.ready()
    rn.propose(b"y")  # inputs are still accepted meanwhile
    st.append(rd.entries)
    rn.advance(rd)
    rd2 = rn.ready()
    assert [e.data for e in rd2.entries] == [b"y"]
    with pytest.raises(RaftError):
        rn.advance(rd)  # not the outstanding one


def test_votes_and_acks_wait_for_persistence() -> None:
    env = Env()
    env.add_nodes(3, voters=(1, 2, 3), pre_vote=False)
    env.nodes[1].rn.campaign()
    rd = env.nodes[1].rn.ready()
    assert not rd.messages
    assert {m.type for m in rd.messages_after_persist} == {MessageType.VOTE}
    assert rd.must_sync and rd.hard_state == HardState(term=2, vote=1, commit=1)


def test_step_refuses_local_messages() -> None:
    rn = new_node()
    for t in (MessageType.HUP, MessageType.BEAT, MessageType.CHECK_QUORUM):
        with pytest.raises(StepLocalMessage):
            rn.step(Message(t, 1, 2))


def test_propose_without_leader_is_dropped() -> None:
    rn = new_node()
    rn.bootstrap([1, 2, 3])
    with pytest.raises(ProposalDropped):
        rn.propose(b"x")
    with pytest.raises(ProposalDropped):
        rn.read_index(b"ctx")
    with pytest.raises(ValueError):
        rn.read_index(b"")


def test_forwarded_proposal_dropped_silently_on_leader_in_transfer() -> None:
    env = Env()
    env.add_nodes(3, voters=(1, 2, 3))
    env.elect(1)
    leader = env.nodes[1].rn
    env.isolate(3)
    leader.transfer_leader(3)
    with pytest.raises(ProposalDropped):
        leader.propose(b"x")
    # The same proposal forwarded by a follower is dropped without an exception.
    from coord.raft import Entry

    leader.step(Message(MessageType.PROP, 1, 2, entries=(Entry(0, 0, data=b"x"),)))
    assert leader._raft.log.last_index() == 2


def test_restart_keeps_term_vote_and_log() -> None:
    env = Env()
    env.add_nodes(3, voters=(1, 2, 3))
    env.elect(1)
    env.nodes[1].rn.propose(b"x")
    env.stabilize()
    env.restart(2)
    r = env.nodes[2].rn._raft
    assert (r.term, r.vote, r.log.last_index(), r.log.committed) == (2, 1, 3, 3)
    assert r.state == StateRole.FOLLOWER and r.lead == 0
    env.stabilize()
    # Committed entries after the snapshot are handed out again for re-application.
    env.tick(1, 1)
    env.stabilize()
    assert [d for _, d in env.nodes[2].applied] == [b"x"]


def test_status_on_leader_and_follower() -> None:
    env = Env()
    env.add_nodes(3, voters=(1, 2, 3))
    env.elect(1)
    st = env.nodes[1].rn.status()
    assert st.soft_state.role == StateRole.LEADER and set(st.progress) == {1, 2, 3}
    assert st.progress[2].match == 2
    assert env.nodes[2].rn.status().progress == {}


def test_report_unreachable_moves_follower_to_probe() -> None:
    from coord.raft import ProgressState

    env = Env()
    env.add_nodes(3, voters=(1, 2, 3))
    env.elect(1)
    leader = env.nodes[1].rn
    assert leader.status().progress[2].state == ProgressState.REPLICATE
    leader.report_unreachable(2)
    assert leader.status().progress[2].state == ProgressState.PROBE


def _leader_past_a_cut_off_follower() -> Env:
    """Leader 1 has committed entries that follower 3 (isolated) lacks, and compacted its
    log behind a snapshot at 4: 3 can catch up only by a snapshot."""
    env = Env()
    env.add_nodes(3, voters=(1, 2, 3))
    env.elect(1)
    env.isolate(3)
    for i in range(3):
        env.nodes[1].rn.propose(b"%d" % i)
    env.stabilize()
    env.nodes[1].storage.create_snapshot(4, ConfState((1, 2, 3)), b"")
    env.nodes[1].storage.compact(4)
    return env


def test_report_snapshot_failure_returns_to_probe() -> None:
    from coord.raft import ProgressState

    env = _leader_past_a_cut_off_follower()
    env.heal()
    env.nodes[1].rn.report_unreachable(3)
    env.tick(1)
    env.process_ready(1)
    env.deliver(3)
    env.process_ready(3)
    env.deliver(1)
    env.process_ready(1)
    pv = env.nodes[1].rn.status().progress[3]
    assert pv.state == ProgressState.SNAPSHOT and pv.pending_snapshot == 4
    env.queue.clear()  # the snapshot is lost in transit
    env.nodes[1].rn.report_snapshot(3, ok=False)
    pv = env.nodes[1].rn.status().progress[3]
    assert pv.state == ProgressState.PROBE and pv.paused
    # After a heartbeat interval the leader retries and the follower catches up.
    env.tick(1)
    env.stabilize()
    assert env.nodes[3].rn._raft.log.committed == env.nodes[1].rn._raft.log.committed


def test_same_seed_same_behaviour() -> None:
    def run(seed: int) -> list[str]:
        from coord.raft import describe_message

        out = []
        rns = {i: RawNode(Config(id=i, rng=random.Random(seed * 10 + i)), MemoryStorage())
               for i in (1, 2, 3)}
        for rn in rns.values():
            rn.bootstrap([1, 2, 3])
        for _ in range(40):
            for rn in rns.values():
                rn.tick()
                while rn.has_ready():
                    rd = rn.ready()
                    rn.advance(rd)
                    for m in rd.messages + rd.messages_after_persist:
                        out.append(describe_message(m))
        return out

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_lease_based_read_answers_without_heartbeat_round() -> None:
    from coord.raft import ReadOnlyOption

    env = Env()
    env.add_nodes(3, voters=(1, 2, 3), read_only=ReadOnlyOption.LEASE_BASED)
    env.elect(1)
    leader = env.nodes[1].rn
    leader.read_index(b"fast")
    rd = leader.ready()
    assert [(rs.index, rs.request_ctx) for rs in rd.read_states] == [(2, b"fast")]
    assert not rd.messages  # no heartbeat round
    leader.advance(rd)


def test_safe_read_needs_quorum_ack() -> None:
    env = Env()
    env.add_nodes(3, voters=(1, 2, 3))
    env.elect(1)
    env.nodes[1].rn.read_index(b"r")
    env.process_ready(1)
    env.deliver(2)  # only one follower sees the heartbeat
    env.process_ready(2)
    assert not env.read_states
    env.deliver(1)
    env.process_ready(1)
    assert [(n, rs.index, rs.request_ctx) for n, rs in env.read_states] == [(1, 2, b"r")]


def test_received_snapshot_blocks_campaign_until_persisted() -> None:
    from coord.raft import Snapshot, SnapshotMetadata

    st = MemoryStorage()
    rn = new_node(2, st, pre_vote=False)
    snap = Snapshot(SnapshotMetadata(5, 2, ConfState((1, 2, 3))))
    rn.step(Message(MessageType.SNAP, 2, 1, term=2, snapshot=snap))
    rn.campaign()
    assert rn._raft.state == StateRole.FOLLOWER  # installing a snapshot: no campaign
    handle(rn, st)
    rn.campaign()
    assert rn._raft.state == StateRole.CANDIDATE


def test_restart_tolerates_stale_commit_and_applied_below_snapshot() -> None:
    from coord.raft import Entry, Snapshot, SnapshotMetadata

    st = MemoryStorage()
    st.apply_snapshot(Snapshot(SnapshotMetadata(5, 2, ConfState((1, 2, 3)))))
    st.append([Entry(2, 6), Entry(2, 7)])
    st.set_hard_state(HardState(term=2, vote=1, commit=3))  # written before the snapshot
    rn = new_node(1, st, applied=2)
    assert rn._raft.log.committed == 5 and rn.status().applied == 5
    st.set_hard_state(HardState(term=2, vote=1, commit=9))
    with pytest.raises(RaftError):
        new_node(1, st)


def test_single_voter_read_after_restart_waits_for_its_term_to_commit() -> None:
    """Only entries must be durable before they are answered; a commit index that moved in
    a Ready with no new entries may be lost in a crash. A single voter restarted with such
    a lagging commit index must not answer a read at it: the read waits for the new term's
    no-op to commit, which commits everything before it (Raft §6.4 applies to one voter)."""
    rn, st = single_leader()
    rn.propose(b"acked-write")
    applied: list[int] = []
    while rn.has_ready():
        rd = handle(rn, st)
        applied += [e.index for e in rd.committed_entries if e.data == b"acked-write"]
    [write_index] = applied  # applied and answered to its client
    hs = st.hard_state()
    assert hs.commit >= write_index
    st.set_hard_state(HardState(term=hs.term, vote=hs.vote, commit=write_index - 1))

    restarted = new_node(1, st)  # crash: the last commit-only record never reached disk
    restarted.campaign()
    states = []
    asked = False
    while restarted.has_ready() or not asked:
        if restarted._raft.state == StateRole.LEADER and not asked:
            assert restarted._raft.log.committed < write_index  # the lagging index, still
            restarted.read_index(b"after-restart")
            asked = True
        if restarted.has_ready():
            states += handle(restarted, st).read_states
    assert [rs.request_ctx for rs in states] == [b"after-restart"]
    assert states[0].index >= write_index


def test_a_snapshot_temporarily_unavailable_is_retried_later() -> None:
    """A storage that cannot produce its snapshot right now (coord's reads it from a file)
    raises SnapshotTemporarilyUnavailable: the leader sends nothing, leaves the follower's
    progress as it was, and sends the snapshot once the storage can."""
    from coord.raft import ProgressState, SnapshotTemporarilyUnavailable

    env = _leader_past_a_cut_off_follower()
    leader = env.nodes[1].storage
    real = leader.snapshot
    calls = []

    def unavailable() -> object:
        calls.append(1)
        raise SnapshotTemporarilyUnavailable("file busy")

    leader.snapshot = unavailable  # type: ignore[method-assign,assignment]
    env.heal()
    for _ in range(3):
        env.tick(1)
        env.stabilize()
    assert calls  # the leader did need it
    assert env.nodes[1].rn.status().progress[3].state != ProgressState.SNAPSHOT
    assert env.nodes[3].rn._raft.log.committed < env.nodes[1].rn._raft.log.committed
    leader.snapshot = real  # type: ignore[method-assign]
    for _ in range(3):
        env.tick(1)
        env.stabilize()
    assert env.nodes[3].rn._raft.log.committed == env.nodes[1].rn._raft.log.committed
