"""Regression tests for findings of the simulator (see FINDINGS.md).

Each finding keeps its seeds (as found, against the core commit named in FINDINGS.md;
later core changes may move a seed off the bug's path, so each also has a directed test
that forces the same situation deterministically).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from coord.raft import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    MessageType,
    RawNode,
    ReadOnlyOption,
    StateRole,
)
from tests.raft.harness import Env
from tests.sim.cluster import Cluster
from tests.sim.eventloop import EventLoop
from tests.sim.options import SimOptions
from tests.sim.runner import run_seed
from tests.sim.workload import Workload

# F1: with max_inflight_msgs=1 a single lost APP stalled replication to that follower
# forever (liveness failure after healing). Fixed in coord/raft 86f43e8.
F1_SEEDS = [23, 27, 36, 54]  # failed on 32fb9f8 with the option layout of 70bbf34


@pytest.mark.parametrize("seed", F1_SEEDS)
def test_f1_seeds(seed: int) -> None:
    res = run_seed(seed)
    assert res.ok, res.report(trace_lines=0)


def test_f1_one_lost_append_does_not_stall_a_follower() -> None:
    """3 voters, inflight window of one, no faults except one APP to a follower dropped:
    the follower must catch up (it stalled forever before the fix)."""
    opts = replace(SimOptions(seed=1), max_inflight=1, clients=2, keys=1, safety_ms=0)
    loop = EventLoop(trace=True)
    cluster = Cluster(opts, loop)
    wl = Workload(cluster)
    wl.start()
    loop.run_until(600)
    leaders = cluster.leaders()
    assert len(leaders) == 1, cluster.describe_nodes()
    leader = leaders[0].id
    victim = next(n for n in cluster.founders if n != leader)
    dropped: list[Message] = []
    send = cluster.net.send

    def lossy_send(m: Message) -> None:
        if not dropped and m.type == MessageType.APP and m.to == victim and m.entries:
            dropped.append(m)
            return
        send(m)

    cluster.net.send = lossy_send  # type: ignore[method-assign,assignment]
    loop.run_until(1200)
    assert dropped, "no APP to drop"
    wl.stop()
    loop.run_until(3000)
    applied = {nid: cluster.nodes[nid].applied for nid in cluster.founders}
    assert applied[victim] == applied[leader], (applied, cluster.describe_nodes())
    assert applied[leader] > dropped[0].index + 1


# F2: a proposal forwarded by a follower can come back to the node that made it (it
# forwarded to a node that had lost leadership, which forwards to the new leader: itself).
# RawNode.step then re-raised ProposalDropped for a *received* message (frm == own id)
# when the leader could not accept it, instead of dropping it silently. Fixed: step()
# drops every refused proposal that arrives over the network.


def test_f2_bounced_own_proposal_is_dropped_silently() -> None:
    opts = replace(SimOptions(seed=2), clients=0, safety_ms=0)
    loop = EventLoop()
    cluster = Cluster(opts, loop)
    loop.run_until(800)
    leaders = cluster.leaders()
    assert len(leaders) == 1, cluster.describe_nodes()
    lead = leaders[0]
    assert lead.raw is not None
    # a conf change in flight: the leader refuses another one until it is applied
    assert cluster.propose_conf_change(lead.id, ConfChange(ConfChangeType.ADD_LEARNER_NODE, 9))
    cc = ConfChange(ConfChangeType.ADD_LEARNER_NODE, 8).encode()
    bounced = Message(
        MessageType.PROP,
        to=lead.id,
        frm=lead.id,  # it made this proposal as a follower, earlier
        entries=(Entry(0, 0, EntryType.CONF_CHANGE, cc),),
    )
    lead.raw.step(bounced)  # must not raise: it arrived from the network


# F3: without pre-vote, a node with a stale log and a fast clock keeps the cluster
# leaderless forever: its VOTE requests carry ever higher terms, the others step up to
# each term (which resets their election timers) and reject it (stale log); its timer
# always fires first. Raft §5.2 resets the timer only when granting a vote.


def _stale_fast_node_after_heal(pre_vote: bool) -> list[int]:
    """Leaders seen (sampled every 100 ms) in the 3 s after a stale, 2.4x-fast follower
    rejoins a healthy 3-node cluster."""
    opts = replace(
        SimOptions(seed=3), pre_vote=pre_vote, check_quorum=False, clients=2, safety_ms=0
    )
    loop = EventLoop()
    cluster = Cluster(opts, loop)
    wl = Workload(cluster)
    wl.start()
    loop.run_until(400)
    lead = cluster.leaders()[0].id
    stale = next(i for i in cluster.founders if i != lead)
    for nid in cluster.founders:
        cluster.tick_period[nid] = 5 if nid == stale else 12
    cluster.net.isolate(stale, cluster.founders, inbound=True, outbound=True)
    loop.run_until(1200)  # the others commit more; the stale node campaigns alone
    cluster.net.heal()
    wl.stop()
    seen = []
    for t in range(3000, 6001, 100):
        loop.run_until(t)
        seen.append(len(cluster.leaders()))
    return seen


def test_f3_control_with_pre_vote_a_leader_is_elected() -> None:
    assert all(n == 1 for n in _stale_fast_node_after_heal(pre_vote=True)[-5:])


def test_f3_stale_fast_node_cannot_block_elections_without_pre_vote() -> None:
    assert all(n == 1 for n in _stale_fast_node_after_heal(pre_vote=False)[-5:])


# F4: LEASE_BASED reads — an isolated leader that had started a leader transfer answered a
# read from its lease 227 ms after it last heard from a quorum (election timeout 100 ms),
# after the others had elected a new leader that committed a write: a stale read. Open in
# coord/raft until 216e50c; etcd-io/raft behaves the same (etcd-io/raft#166).
F4_SEEDS = [51497]


@pytest.mark.parametrize("seed", F4_SEEDS)
def test_f4_seeds(seed: int) -> None:
    res = run_seed(seed)
    assert res.ok, res.report(trace_lines=0)


def _lease_cluster() -> tuple[Env, RawNode]:
    env = Env()
    env.add_nodes(3, voters=(1, 2, 3), read_only=ReadOnlyOption.LEASE_BASED)
    env.elect(1)
    leader = env.nodes[1].rn
    leader.read_index(b"warm")  # in lease: answered at once, no heartbeat round
    env.process_ready(1)
    assert [rs.request_ctx for _, rs in env.read_states] == [b"warm"]
    env.read_states.clear()
    return env, leader


def _isolated_lease_ticks(env: Env, nid: int, ticks: int) -> None:
    for _ in range(ticks):
        env.tick(nid)
        env.process_ready(nid)
        env.deliver()  # everything to or from the isolated node is dropped


def test_f4_a_lease_leader_that_heard_no_quorum_since_its_last_check_confirms_reads() -> None:
    """Check-quorum counts contacts since the previous check, so an isolated leader passes
    one more check on what it heard before the partition and stays leader for almost two
    election timeouts, while the others elect a new leader after one. Its lease covers a
    read only if a quorum was heard from since that check; otherwise the read waits for a
    heartbeat round, as a SAFE read does."""
    env, leader = _lease_cluster()
    env.isolate(1)
    _isolated_lease_ticks(env, 1, 10)  # one election timeout: the check passes
    assert leader.role == StateRole.LEADER
    leader.read_index(b"after-check")
    env.process_ready(1)
    assert env.read_states == []  # not from the lease: nobody answered since the check
    env.heal()
    env.stabilize()
    assert [(n, rs.request_ctx) for n, rs in env.read_states] == [(1, b"after-check")]


def test_f4_no_lease_reads_in_a_term_after_a_timeout_now() -> None:
    """A transfer's TIMEOUT_NOW makes the transferee campaign with forced votes, which the
    followers grant whatever their lease; it can arrive late, after the transfer was given
    up. So once a leader has sent one, it confirms its reads with a heartbeat round for the
    rest of its term."""
    env, leader = _lease_cluster()
    env.dropped_links = {(1, 2)}  # the TIMEOUT_NOW to 2 is lost; 3 still hears from 1
    leader.transfer_leader(2)
    env.process_ready(1)
    assert any(m.type == MessageType.TIMEOUT_NOW for m in env.queue)
    env.deliver()
    for _ in range(10):  # the transfer does not finish within an election timeout
        env.tick(1)
        env.stabilize([1, 3])
    assert leader._raft.state == StateRole.LEADER and leader._raft.lead_transferee == 0
    leader.read_index(b"after-transfer")
    env.process_ready(1)
    assert env.read_states == []  # in lease by contacts, but not after a TIMEOUT_NOW
    env.stabilize([1, 3])  # 3's heartbeat ack makes a quorum with the leader
    assert [(n, rs.request_ctx) for n, rs in env.read_states] == [(1, b"after-transfer")]


# F6: a restarted member reused its ReadIndex contexts (counted from 1): the leader still
# had the previous process's "3/1" pending, ignored the new one, and answered with the
# read index fixed before a write the new read followed — a stale read. Seed 135654 (a
# member restarted with a read in flight) fails with a context that repeats per process.
F6_SEEDS = [135654]


@pytest.mark.parametrize("seed", F6_SEEDS)
def test_f6_seeds(seed: int) -> None:
    res = run_seed(seed)
    assert res.ok, res.report(trace_lines=0)


# S2 (simulator): the probe's proposer, checked as "final leader", had lost leadership and
# was applying during a write before holding the newest committed entry (seed 129055).
S2_SEEDS = [129055]


@pytest.mark.parametrize("seed", S2_SEEDS)
def test_s2_seeds(seed: int) -> None:
    res = run_seed(seed)
    assert res.ok, res.report(trace_lines=0)


S3_S4_SEEDS = [216428, 231415]
"""S3: a leader of an older term elected after a newer term committed (the checker asked
it for that entry); S4: every founder crashed before its bootstrap Ready was durable and
restarted with nothing (the server's recovery bootstraps again; the simulator did not)."""


@pytest.mark.parametrize("seed", S3_S4_SEEDS)
def test_s3_s4_seeds(seed: int) -> None:
    res = run_seed(seed)
    assert res.ok, res.report(trace_lines=0)


F7_SEEDS = [300006, 300022, 300100, 300133]
"""F7 (member, recovery): a WAL replayed after a snapshot from the leader was installed
(the log jumps there) kept an old entry beside the one that rewrote it; the restarted
member had two entries at one index. Fail with ``coord.storage.records.replay`` before
the fix."""


@pytest.mark.parametrize("seed", F7_SEEDS)
def test_f7_seeds(seed: int) -> None:
    res = run_seed(seed)
    assert res.ok, res.report(trace_lines=0)


F8_SEEDS = [303204]
"""F8 (member, recovery): a member that installed a snapshot from the leader and crashed
before the leader's next entries arrived restarted with its older-term entries after the
snapshot (still in the WAL). Fail with ``member_ready.recover`` keeping them."""


@pytest.mark.parametrize("seed", F8_SEEDS)
def test_f8_seeds(seed: int) -> None:
    res = run_seed(seed)
    assert res.ok, res.report(trace_lines=0)
