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
    ProposalDropped,
)
from tests.sim.cluster import Cluster
from tests.sim.eventloop import EventLoop
from tests.sim.options import SimOptions
from tests.sim.runner import run_seed
from tests.sim.workload import Workload

# F1: with max_inflight_msgs=1 a single lost APP stalled replication to that follower
# forever (liveness failure after healing). Fixed in coord/raft 86f43e8.
F1_SEEDS = [23, 27, 36, 54]  # fail on 32fb9f8 with the current option layout


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
# RawNode.step then re-raises ProposalDropped for a *received* message (frm == own id)
# when the leader cannot accept it, instead of dropping it silently.


@pytest.mark.xfail(
    strict=True,
    raises=ProposalDropped,
    reason="F2 open (core): RawNode.step re-raises ProposalDropped for a bounced proposal",
)
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
