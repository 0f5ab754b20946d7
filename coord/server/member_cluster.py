"""A member's dealings with the rest of the cluster outside the Raft log: lease calls
forwarded to the leader (only its lessor keeps deadlines), joining, publishing this
member's name and URLs, membership changes and leadership transfer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import structlog

from coord.aiotools import within
from coord.errors import (
    MemberNotFound,
    NoLeader,
    NotLeader,
    RequestTimeout,
    Stopped,
)
from coord.pb import raft_pb2
from coord.raft import (
    ConfChange,
    ConfChangeType,
    ProposalDropped,
)
from coord.server.member_state import (
    REQUEST_TIMEOUT,
    TAG_ATTRS,
    MemberState,
)
from coord.server.transport import H2PeerStub

log = structlog.get_logger("coord.raftnode")


class ClusterOps(MemberState):
    async def lease_renew(self, lease_id: int) -> int:
        """Renew on the leader's lessor (locally, or forwarded to the leader)."""
        if self.is_leader:
            return self.applier.lessor.renew(lease_id, time.monotonic())
        await self._wait_leader()
        stub = self.transport.stub(self._leader)
        if stub is None:
            raise NoLeader()
        try:
            resp = await stub.LeaseRenew(raft_pb2.LeaseRenewRequest(id=lease_id), timeout=3.0)
        except Exception as err:
            raise NoLeader() from err
        if resp.not_leader:
            raise NotLeader()
        return int(resp.ttl)

    def serve_lease_ttl(self, lease_id: int) -> tuple[int, int, list[bytes]] | None:
        if not self.is_leader:
            return None
        return self.applier.lessor.time_to_live(lease_id, time.monotonic())

    async def lease_time_to_live(self, lease_id: int) -> tuple[int, int, list[bytes]]:
        """The leader's view of a lease (followers have no deadlines), as etcd forwards."""
        if self.is_leader:
            return self.applier.lessor.time_to_live(lease_id, time.monotonic())
        await self._wait_leader()
        stub = self.transport.stub(self._leader)
        if stub is None:
            raise NoLeader()
        try:
            resp = await stub.LeaseTimeToLive(raft_pb2.LeaseTTLRequest(id=lease_id), timeout=3.0)
        except Exception as err:
            raise NoLeader() from err
        if resp.not_leader:
            raise NotLeader()
        return int(resp.ttl), int(resp.granted), list(resp.keys)

    async def serve_lease_renew(self, lease_id: int) -> tuple[int, bool]:
        if not self.is_leader:
            return 0, True
        try:
            return self.applier.lessor.renew(lease_id, time.monotonic()), False
        except NotLeader:
            return 0, True

    async def discover_cluster(self) -> None:
        """Joining (``--initial-cluster-state existing``, empty data dir): ask the other
        members for the cluster id, and check that they added this member (by peer URL)."""
        me = self.config.listen_peer
        for name, peer in self.config.initial_cluster.items():
            if name == self.config.name:
                continue
            try:
                resp = await H2PeerStub(peer, self.transport.peer_ssl).Join(
                    raft_pb2.MemberJoinRequest(peer=me), timeout=3)
            except ConnectionError as err:
                log.warning("raftnode.join_ask_failed", peer=peer, error=str(err))
                continue
            if not resp.found:
                log.warning("raftnode.join_not_added", peer=peer,
                            hint="run `etcdctl member add` for this member first")
                continue
            if resp.member_id != self.member_id:
                log.warning("raftnode.join_id_mismatch", expected=f"{self.member_id:x}",
                            got=f"{resp.member_id:x}")
            self.cluster_id = resp.cluster_id
            log.info("raftnode.join_discovered", cluster_id=f"{self.cluster_id:x}", via=peer)
            return

    def lookup_peer(self, peer: str) -> tuple[int, int]:
        info = self.membership.by_peer(peer)
        return (info.id if info else 0), self.cluster_id

    async def _publish(self) -> None:
        """Publish this member's name and client URL through the log (etcd's publish)."""
        client = self.config.client_url
        while True:
            await asyncio.sleep(0.2)
            info = self.membership.members.get(self.member_id)
            if self.removed or info is None:
                if self.removed:
                    return
                continue
            if info.name == self.config.name and info.clients == [client]:
                await asyncio.sleep(1.0)
                continue
            if self._leader == 0 or self.rn is None:
                continue
            data = json.dumps({"id": self.member_id, "name": self.config.name,
                               "clients": [client]}).encode()
            with contextlib.suppress(ProposalDropped):
                self.rn.propose(TAG_ATTRS + data)
                self._kick.set()
            await asyncio.sleep(1.0)

    async def change_membership(self, cc_type: ConfChangeType, node_id: int,
                                peer: str = "", name: str = "") -> None:
        """Propose a conf change and wait until it is applied here."""
        if self._stopped:
            raise Stopped()
        await self._wait_leader()
        assert self.rn is not None
        if cc_type == ConfChangeType.REMOVE_NODE and node_id not in self.membership.members:
            raise MemberNotFound()
        rid = self._next_id()
        ctx = json.dumps({"rid": rid, "peer": peer, "name": name}).encode()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._conf_waiters[rid] = fut
        try:
            deadline = time.monotonic() + REQUEST_TIMEOUT
            while True:
                try:
                    self.rn.propose_conf_change(ConfChange(cc_type, node_id, ctx))
                    break
                except ProposalDropped:
                    # an earlier change (or the leader's no-op) is not applied yet
                    if time.monotonic() > deadline:
                        raise RequestTimeout() from None
                    await asyncio.sleep(0.05)
            self._kick.set()
            try:
                await within(asyncio.shield(fut), REQUEST_TIMEOUT)
            except TimeoutError:
                raise RequestTimeout() from None
        finally:
            self._conf_waiters.pop(rid, None)

    def learner_in_sync(self, node_id: int) -> bool:
        assert self.rn is not None
        st = self.rn.status()
        pr = st.progress.get(node_id)
        if pr is None:
            return False
        # etcd's rule (isLearnerReady): the learner's match is at least 90% of the
        # leader's commit — and it must have answered at all, or promoting it could cost
        # the cluster its quorum.
        return pr.match > 0 and pr.match >= 0.9 * self._commit

    def ready_to_remove(self, node_id: int) -> bool:
        """etcd's strict reconfig check: after removing ``node_id`` the voters that are
        still active must form a quorum of the remaining voters (never zero voters)."""
        assert self.rn is not None
        progress = self.rn.status().progress
        if not progress:
            return True  # not the leader: the leader decides when the proposal arrives
        voters = [i for i, pr in progress.items() if not pr.is_learner]
        if node_id not in voters:
            return True  # removing a learner never costs a quorum
        remaining = [i for i in voters if i != node_id]
        if not remaining:
            return False
        started = [i for i in remaining if i == self.member_id or progress[i].recent_active]
        return len(started) >= len(remaining) // 2 + 1

    def transfer_leader(self, target: int) -> None:
        assert self.rn is not None
        self.rn.transfer_leader(target)
        self._kick.set()
