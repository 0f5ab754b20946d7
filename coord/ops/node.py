"""A member that counts what etcd's metrics count and cannot be read off its state at
scrape time: proposals in flight and failed, leader changes, WAL fsync durations.

``MeteredRaftNode`` is the plain :class:`~coord.server.raft_node.RaftNode` with these
counters around ``propose``, the soft-state change and the WAL writer; the composition root
builds it only when metrics are on, so a member without ``--listen-metrics`` runs the
plain class and pays nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coord.errors import LeaderChanged, NoLeader, RequestTimeout, Stopped
from coord.pb import internal_pb2
from coord.raft import StateRole
from coord.server.raft_node import RaftNode

PROPOSAL_FAILURES = (NoLeader, LeaderChanged, RequestTimeout, Stopped)
"""What etcd counts in proposals_failed_total: a proposal that was dropped, timed out or
lost to a leader change (not one the applier answered with an error)."""


class MeteredRaftNode(RaftNode):
    """RaftNode with the counters of :class:`coord.ops.etcd_metrics.EtcdMetrics`."""

    proposals_pending = 0
    proposals_failed = 0
    leader_changes = 0
    on_fsync: Callable[[float], None] | None = None
    """Called (on the WAL's thread or the loop) with each WAL fsync's seconds."""

    async def propose(self, req: internal_pb2.InternalRequest) -> Any:
        self.proposals_pending += 1
        try:
            return await super().propose(req)
        except PROPOSAL_FAILURES:
            self.proposals_failed += 1
            raise
        finally:
            self.proposals_pending -= 1

    def _on_soft_state(self, leader: int, role: StateRole) -> None:
        # etcd counts a change to a known leader other than the one before
        # (``leaderChanges`` in etcdserver's raft loop); losing the leader is not one.
        if leader and leader != self._leader:
            self.leader_changes += 1
        super()._on_soft_state(leader, role)

    def recover(self) -> None:
        super().recover()
        if self._writer is not None:
            self._writer.on_fsync = self.on_fsync
