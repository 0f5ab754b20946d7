"""Conformance with the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable
Consensus Algorithm", extended version). Each test quotes the rule it checks, then does
init -> step -> check messages/state, as etcd-io/raft's raft_paper_test.go does.
"""

from __future__ import annotations

import random

import pytest

from coord.raft import (
    Config,
    Entry,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    Snapshot,
    SnapshotMetadata,
    StateRole,
)
from coord.raft.types import ConfState
from tests.raft.harness import Env, FixedRandom

MT = MessageType


def node(
    nid: int = 1,
    peers: tuple[int, ...] = (1, 2, 3),
    log_terms: tuple[int, ...] = (),
    term: int = 1,
    **cfg: object,
) -> tuple[RawNode, MemoryStorage]:
    """A node whose log holds the snapshot at 1 (term 1) then entries 2.. of ``log_terms``."""
    st = MemoryStorage()
    st.apply_snapshot(Snapshot(SnapshotMetadata(1, 1, ConfState(peers))))
    st.append([Entry(t, 2 + i) for i, t in enumerate(log_terms)])
    st.set_hard_state(HardState(term=term, commit=1))
    cfg.setdefault("pre_vote", False)
    cfg.setdefault("check_quorum", False)
    rn = RawNode(Config(id=nid, rng=FixedRandom(nid), applied=1, **cfg), st)  # type: ignore[arg-type]
    return rn, st


def outbox(rn: RawNode, st: MemoryStorage) -> list[Message]:
    out: list[Message] = []
    while rn.has_ready():
        rd = rn.ready()
        st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        out += rd.messages + rd.messages_after_persist
        rn.advance(rd)
    return out


# §5.1 "If a server receives a request with a stale term number, it rejects the request."
# "If one server's current term is smaller than the other's, then it updates its current
# term to the larger value. If a candidate or leader discovers that its term is out of
# date, it immediately reverts to follower state."
@pytest.mark.parametrize("role", ["follower", "candidate", "leader"])
def test_update_term_from_message(role: str) -> None:
    env = Env()
    env.add_nodes(3, voters=(1, 2, 3), pre_vote=False)
    rn = env.nodes[1].rn
    if role == "candidate":
        rn.campaign()
    elif role == "leader":
        env.elect(1)
    rn.step(Message(MT.APP, 1, 2, term=9, log_term=0, index=0))
    assert rn._raft.term == 9 and rn._raft.state == StateRole.FOLLOWER


def test_reject_stale_term_message() -> None:
    rn, st = node(term=5, pre_vote=False, check_quorum=False)
    rn.step(Message(MT.APP, 1, 2, term=4, log_term=1, index=1, entries=(Entry(4, 2),)))
    assert rn._raft.log.last_index() == 1 and rn._raft.term == 5
    assert outbox(rn, st) == []  # silently ignored (no pre-vote, no check-quorum)


# §5.2 "To begin an election, a follower increments its current term and transitions to
# candidate state. It then votes for itself and issues RequestVote RPCs in parallel to
# each of the other servers."
def test_follower_starts_election_after_timeout() -> None:
    rn, st = node()
    for _ in range(rn._raft.cfg.election_tick):
        rn.tick()
    assert rn._raft.state == StateRole.CANDIDATE and rn._raft.term == 2 and rn._raft.vote == 1
    msgs = outbox(rn, st)
    assert sorted((m.to, m.type, m.term) for m in msgs) == [(2, MT.VOTE, 2), (3, MT.VOTE, 2)]


# §5.2 "Raft uses randomized election timeouts ... chosen randomly from a fixed interval".
def test_election_timeout_is_randomized_in_range() -> None:
    seen = set()
    for seed in range(50):
        rn = RawNode(Config(id=1, rng=random.Random(seed), election_tick=10), MemoryStorage())
        rn._raft.become_follower(1, 0)
        seen.add(rn._raft.randomized_election_timeout)
    assert seen <= set(range(10, 20)) and len(seen) > 5


# §5.2 "Each server will vote for at most one candidate in a given term, on a
# first-come-first-served basis."
def test_vote_once_per_term() -> None:
    rn, st = node(nid=3)
    rn.step(Message(MT.VOTE, 3, 1, term=2, log_term=1, index=1))
    rn.step(Message(MT.VOTE, 3, 2, term=2, log_term=1, index=1))
    rn.step(Message(MT.VOTE, 3, 1, term=2, log_term=1, index=1))  # a retry is granted again
    resps = [(m.to, m.reject) for m in outbox(rn, st) if m.type == MT.VOTE_RESP]
    assert resps == [(1, False), (2, True), (1, False)]
    assert st.hard_state().vote == 1


# §5.2 "While waiting for votes, a candidate may receive an AppendEntries RPC from another
# server claiming to be leader. If the leader's term is at least as large as the
# candidate's current term, then the candidate recognizes the leader as legitimate and
# returns to follower state."
def test_candidate_yields_to_leader_of_same_term() -> None:
    rn, _ = node()
    rn.campaign()
    assert rn._raft.state == StateRole.CANDIDATE
    rn.step(Message(MT.APP, 1, 2, term=2, log_term=1, index=1))
    assert rn._raft.state == StateRole.FOLLOWER and rn._raft.lead == 2


# §5.2 "a candidate wins an election if it receives votes from a majority of the servers
# in the full cluster for the same term."
@pytest.mark.parametrize(
    ("size", "grants", "won"),
    [(3, 1, True), (3, 0, False), (5, 2, True), (5, 1, False), (1, 0, True)],
)
def test_candidate_needs_majority(size: int, grants: int, won: bool) -> None:
    peers = tuple(range(1, size + 1))
    rn, st = node(peers=peers)
    rn.campaign()
    outbox(rn, st)  # persists, then counts its own vote
    for voter in peers[1 : 1 + grants]:
        rn.step(Message(MT.VOTE_RESP, 1, voter, term=2))
    outbox(rn, st)
    assert (rn._raft.state == StateRole.LEADER) == won


# §5.3 "Once a leader has been elected ... it appends the command to its log as a new
# entry, then issues AppendEntries RPCs in parallel to each of the other servers";
# "A log entry is committed once the leader that created the entry has replicated it on
# a majority of the servers"; followers apply entries once they learn they are committed.
def test_leader_replicates_and_commits_on_majority() -> None:
    env = Env()
    env.add_nodes(5, voters=(1, 2, 3, 4, 5))
    env.elect(1)
    env.partition({1, 2, 3}, {4, 5})
    env.nodes[1].rn.propose(b"cmd")
    env.stabilize()
    assert env.nodes[1].rn._raft.log.committed == 3
    assert [d for _, d in env.nodes[2].applied] == [b"cmd"]
    assert env.nodes[4].applied == []
    env.partition({1, 2}, {3, 4, 5})
    env.nodes[1].rn.propose(b"not-yet")
    env.stabilize()
    assert env.nodes[1].rn._raft.log.committed == 3  # only 2 of 5


# §5.3 "If a follower's log is inconsistent with the leader's, the AppendEntries
# consistency check will fail ... After a rejection, the leader decrements nextIndex and
# retries"; with fast backtracking the follower's hint skips whole terms.
def test_follower_rejects_mismatching_append_with_hint() -> None:
    rn, st = node(nid=2, log_terms=(1, 2, 2, 2))  # entries 2..5
    rn.step(Message(MT.APP, 2, 1, term=3, log_term=3, index=5, entries=(Entry(3, 6),)))
    (resp,) = outbox(rn, st)
    assert resp.type == MT.APP_RESP and resp.reject and resp.index == 5
    assert (resp.log_term, resp.reject_hint) == (2, 5)  # last entry with term <= 3
    rn.step(Message(MT.APP, 2, 1, term=3, log_term=2, index=9))
    (resp,) = outbox(rn, st)
    assert resp.reject and (resp.log_term, resp.reject_hint) == (2, 5)


def test_follower_truncates_conflicting_entries() -> None:
    rn, st = node(nid=2, log_terms=(1, 2, 2))
    rn.step(Message(MT.APP, 2, 1, term=3, log_term=1, index=2,
                    entries=(Entry(3, 3), Entry(3, 4)), commit=3))
    outbox(rn, st)
    assert [(e.term, e.index) for e in st.entries(2, 5)] == [(1, 2), (3, 3), (3, 4)]
    assert st.hard_state().commit == 3


# §5.4.1 "the voter denies its vote if its own log is more up-to-date than that of the
# candidate" — unless the "vote_for_shorter_log" bug is injected.
@pytest.mark.parametrize(
    ("cand_last", "granted"),
    [((3, 4), True), ((2, 9), False), ((3, 3), False), ((4, 2), True)],
)
def test_vote_requires_up_to_date_log(cand_last: tuple[int, int], granted: bool) -> None:
    rn, st = node(nid=2, log_terms=(2, 3, 3))  # last entry 3/4
    t, i = cand_last
    rn.step(Message(MT.VOTE, 2, 1, term=5, log_term=t, index=i))
    (resp,) = outbox(rn, st)
    assert resp.reject is not granted

    buggy, bst = node(nid=2, log_terms=(2, 3, 3), bugs=frozenset({"vote_for_shorter_log"}))
    buggy.step(Message(MT.VOTE, 2, 1, term=5, log_term=t, index=i))
    (resp,) = outbox(buggy, bst)
    assert not resp.reject


# §5.4.2 "Raft never commits log entries from previous terms by counting replicas. Only
# log entries from the leader's current term are committed by counting replicas."
def test_leader_does_not_commit_previous_term_entry_by_counting() -> None:
    rn, st = node(log_terms=(1,), term=1)  # entry 1/2 is of term 1
    rn.campaign()
    outbox(rn, st)
    rn.step(Message(MT.VOTE_RESP, 1, 2, term=2))
    outbox(rn, st)
    assert rn._raft.state == StateRole.LEADER
    # Follower 2 acknowledges only up to the old entry 2: a majority holds it, but it is
    # from term 1.
    rn.step(Message(MT.APP_RESP, 1, 2, term=2, index=2))
    outbox(rn, st)
    assert rn._raft.log.committed == 1
    rn.step(Message(MT.APP_RESP, 1, 2, term=2, index=3))  # the term-2 no-op
    outbox(rn, st)
    assert rn._raft.log.committed == 3  # commits it and, indirectly, entry 2


# §8 "a leader must have the latest information on which entries are committed ... Raft
# handles this by having each leader commit a blank no-op entry at the start of its term."
def test_leader_appends_noop_on_election() -> None:
    env = Env()
    env.add_nodes(3, voters=(1, 2, 3))
    env.elect(2)
    entries = env.nodes[2].rn._raft.log.all_entries()
    assert [(e.term, e.data) for e in entries] == [(2, b"")]
