"""forget_leader: a driver that learns its leader is gone (the leader's stream broke) lets
the followers elect a new leader at once instead of after an election timeout, and a
false alarm changes nothing while the leader is alive (pre-vote + check-quorum)."""

from __future__ import annotations

from coord.raft import ReadOnlyOption, StateRole
from tests.raft.harness import Env


def _cluster() -> Env:
    env = Env()
    env.add_nodes(3, voters=(1, 2, 3), pre_vote=True, check_quorum=True)
    env.elect(1)
    assert env.leader() == 1
    return env


def test_followers_that_forget_a_dead_leader_elect_without_waiting() -> None:
    env = _cluster()
    env.crash(1)
    # Without the hint, node 2 in its lease cannot win: node 3 ignores its pre-vote.
    env.nodes[2].rn.campaign()
    env.stabilize([2, 3], verbose=False)
    assert env.nodes[2].rn._raft.state != StateRole.LEADER
    # Both followers saw the leader's stream break and forgot it: 2 wins with no tick.
    env.nodes[2].rn.forget_leader()
    env.nodes[3].rn.forget_leader()
    assert env.nodes[3].rn.follower_without_leader
    env.nodes[2].rn.campaign()
    env.stabilize([2, 3], verbose=False)
    assert env.nodes[2].rn._raft.state == StateRole.LEADER
    assert env.nodes[3].rn._raft.lead == 2


def test_a_false_alarm_does_not_depose_a_live_leader() -> None:
    env = _cluster()
    term = env.nodes[1].rn._raft.term
    env.nodes[2].rn.forget_leader()  # 2 believes the leader is gone; 3 still hears from it
    assert env.nodes[2].rn.follower_without_leader
    env.nodes[2].rn.campaign()
    env.stabilize(verbose=False)
    assert env.leader() == 1 and env.nodes[1].rn._raft.term == term
    # The leader's next heartbeat gives 2 its leader back.
    env.tick(1, env.nodes[1].rn._raft.cfg.heartbeat_tick)
    env.stabilize(verbose=False)
    assert env.nodes[2].rn._raft.lead == 1 and not env.nodes[2].rn.follower_without_leader


def test_forget_leader_is_a_no_op_on_a_leader() -> None:
    env = _cluster()
    env.nodes[1].rn.forget_leader()
    assert env.nodes[1].rn._raft.lead == 1 and env.leader() == 1


def test_forget_leader_is_a_no_op_with_lease_based_reads() -> None:
    """A lease-based leader answers reads on the promise that nobody else is elected
    within its lease; a follower forgetting it early would break that promise."""
    env = Env()
    env.add_nodes(3, voters=(1, 2, 3), pre_vote=True, check_quorum=True,
                  read_only=ReadOnlyOption.LEASE_BASED)
    env.elect(1)
    env.nodes[2].rn.forget_leader()
    assert env.nodes[2].rn._raft.lead == 1 and not env.nodes[2].rn.follower_without_leader
