"""Core: what the gRPC services see of a member — the node, the applier, the lessor.

It provides the narrow interfaces the services are written against (``coord.api.ports``:
``RaftKV``, ``Leases``, ``MemberStatus``, ``ClusterMembers``): ``propose`` (a state change
through the log), ``read_barrier`` (before a linearizable read), ``fill_header``, the
read-side accessors and the membership changes with their checks, and nothing else. It
hides whether the member is a single node or a Raft cluster member.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from typing import Any, Protocol

import structlog

from coord.auth import AuthStore
from coord.auth.caller import caller
from coord.errors import (
    BadLeaderTransferee,
    LearnerNotReady,
    MemberNotFound,
    MemberNotLearner,
    MembershipUnsupported,
    NotEnoughStartedMembers,
    NotLeader,
    PeerURLExists,
    RequestTimeout,
    TooManyLearners,
)
from coord.mvcc.watch import WatchHub
from coord.pb import internal_pb2, rpc_pb2
from coord.raft import ConfChangeType
from coord.server import snapshotter
from coord.server.apply import Applier
from coord.server.config import ServerConfig, member_id_for

log = structlog.get_logger("coord.core")

MAX_LEARNERS = 1
"""etcd 3.4 allows one learner at a time."""

LEASE_EXPIRY_INTERVAL = 0.25
"""Seconds between the leader's scans for expired leases."""


class Node(Protocol):
    member_id: int
    cluster_id: int

    @property
    def term(self) -> int: ...
    @property
    def leader_id(self) -> int: ...
    @property
    def is_leader(self) -> bool: ...
    @property
    def applied_index(self) -> int: ...
    @property
    def committed_index(self) -> int: ...
    async def propose(self, req: internal_pb2.InternalRequest) -> Any: ...
    async def read_index(self) -> None: ...
    def log_disk_bytes(self) -> int: ...


class Core:
    def __init__(self, node: Node, applier: Applier, config: ServerConfig) -> None:
        self.node = node
        self.applier = applier
        self.config = config
        self._rng = random.SystemRandom()
        self._expiry_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ requests
    def fill_header(self, header: rpc_pb2.ResponseHeader, revision: bool = True) -> None:
        """Fill cluster_id, member_id and raft_term; with ``revision``, also the current
        revision where the applier left it unset."""
        header.cluster_id = self.node.cluster_id
        header.member_id = self.node.member_id
        header.raft_term = self.node.term
        if revision and not header.revision:
            header.revision = self.applier.current_revision

    async def propose(self, req: internal_pb2.InternalRequest) -> Any:
        self._stamp(req)
        return await self.node.propose(req)

    @staticmethod
    def _stamp(req: internal_pb2.InternalRequest) -> None:
        """Name the caller the auth guard found (auth enabled) in the request's header, for
        the applier's permission check at the request's place in the log."""
        user = caller.get()
        if user is not None:
            req.header.username = user

    @property
    def auth_store(self) -> AuthStore:
        """The applied auth state (read only: changes go through :meth:`propose`)."""
        return self.applier.auth

    @property
    def cert_users(self) -> bool:
        tls = self.config.client_tls
        return tls is not None and tls.client_cert_auth

    async def state_snapshot(self) -> list[bytes | memoryview]:
        """Maintenance.Snapshot's bytes (the applier's whole state), as pieces."""
        return await snapshotter.state_snapshot(self.applier)

    @property
    def watch_hub(self) -> WatchHub:
        return self.applier.watch_hub

    def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        return self.applier.range(request)

    def hash_kv(self, revision: int) -> tuple[int, int]:
        return self.applier.hash_kv(revision)

    def lease_ids_by_expiry(self) -> list[int]:
        lessor = self.applier.lessor

        def deadline(lease_id: int) -> float:
            lease = lessor.lookup(lease_id)
            return float(lease.deadline) if lease is not None else float("inf")

        # Equal deadlines keep grant order (a stable sort), as etcd lists them.
        return sorted(lessor.leases(), key=deadline)

    # ------------------------------------------------------------------ status
    @property
    def leader_id(self) -> int:
        return self.node.leader_id

    @property
    def term(self) -> int:
        return self.node.term

    @property
    def committed_index(self) -> int:
        return self.node.committed_index

    @property
    def applied_index(self) -> int:
        return self.node.applied_index

    @property
    def is_learner(self) -> bool:
        table = getattr(self.node, "membership", None)
        me = table.members.get(self.node.member_id) if table is not None else None
        return me is not None and bool(me.learner)

    async def read_barrier(self, serializable: bool) -> None:
        """Wait until a read here sees every write acknowledged before the call."""
        if not serializable:
            await self.node.read_index()

    def apply_read_only(self, req: internal_pb2.InternalRequest) -> Any:
        """Evaluate a request that cannot write (a read-only txn) on the applied state."""
        self._stamp(req)
        return self.applier.apply(req, time.monotonic())

    def new_lease_id(self) -> int:
        """A fresh positive int63 lease id not in use (ids are fixed before proposing)."""
        while True:
            candidate = self._rng.getrandbits(63)
            if candidate and candidate not in self.applier.lessor:
                return candidate

    def approximate_size(self) -> int:
        """Bytes the member keeps on disk (WAL records + snapshots): what etcd reports as
        dbSize. The WAL's preallocated space is not counted."""
        total = self.node.log_disk_bytes()
        wal = self.config.data_dir / "wal"
        for path in self.config.data_dir.rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file() and path.parent != wal:
                    total += path.stat().st_size
        return total

    def members(self) -> list[rpc_pb2.Member]:
        table = getattr(self.node, "membership", None)
        if table is not None:
            out: list[rpc_pb2.Member] = table.to_pb(self.config.peer_scheme)
            for m in out:  # this member's own attributes, before its publish is applied
                if self.node.member_id == m.ID and not m.clientURLs:
                    m.name = self.config.name
                    m.clientURLs.append(self.config.client_url)
            return out
        ids = self.config.member_ids
        out = []
        for name, peer in self.config.initial_cluster.items():
            m = rpc_pb2.Member(ID=ids[name], name=name,
                               peerURLs=[f"{self.config.peer_scheme}://{peer}"])
            if name == self.config.name:
                m.clientURLs.append(self.config.client_url)
            out.append(m)
        return out

    async def transfer_leader(self, target: int) -> None:
        transfer = getattr(self.node, "transfer_leader", None)
        if transfer is None:
            if target != self.node.member_id:
                raise BadLeaderTransferee()
            return
        if not self.node.is_leader:
            raise NotLeader()
        if target not in {m.ID for m in self.members() if not m.isLearner}:
            raise BadLeaderTransferee()
        transfer(target)
        deadline = time.monotonic() + 2 * self.config.election_ticks * self.config.tick_ms / 1000
        while self.node.leader_id != target:
            if time.monotonic() > deadline:
                raise RequestTimeout("etcdserver: request timed out, leader transfer took too long")
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------------ membership
    def _membership_node(self) -> Any:
        if not hasattr(self.node, "change_membership"):
            raise MembershipUnsupported()
        return self.node

    async def add_member(self, peers: Sequence[str], learner: bool) -> int:
        """Add the member listening on ``peers[0]`` (a learner with ``learner``); its id."""
        node = self._membership_node()
        if any(node.membership.by_peer(p) is not None for p in peers):
            raise PeerURLExists()
        if learner and sum(
                1 for m in node.membership.members.values() if m.learner) >= MAX_LEARNERS:
            raise TooManyLearners()
        member_id = member_id_for("", peers[0], self.config.cluster_token)
        cc_type = ConfChangeType.ADD_LEARNER_NODE if learner else ConfChangeType.ADD_NODE
        await node.change_membership(cc_type, member_id, peer=peers[0])
        return member_id

    async def remove_member(self, member_id: int) -> None:
        node = self._membership_node()
        if member_id not in node.membership.members:
            raise MemberNotFound()
        if not node.ready_to_remove(member_id):
            raise NotEnoughStartedMembers()
        await node.change_membership(ConfChangeType.REMOVE_NODE, member_id)

    async def promote_member(self, member_id: int) -> None:
        node = self._membership_node()
        info = node.membership.members.get(member_id)
        if info is None:
            raise MemberNotFound()
        if not info.learner:
            raise MemberNotLearner()
        if not node.is_leader:
            raise NotLeader()  # only the leader knows how far the learner got
        if not node.learner_in_sync(member_id):
            raise LearnerNotReady()
        await node.change_membership(ConfChangeType.ADD_NODE, member_id, peer=info.peer,
                                     name=info.name)

    # ------------------------------------------------------------------ leases
    async def lease_renew(self, lease_id: int) -> int:
        """Renew a lease on the leader's lessor (forwarded when this member follows)."""
        renew = getattr(self.node, "lease_renew", None)
        if renew is None:
            return self.applier.lessor.renew(lease_id, time.monotonic())
        ttl: int = await renew(lease_id)
        return ttl

    async def lease_time_to_live(self, lease_id: int) -> tuple[int, int, list[bytes]]:
        """``(ttl_left, granted, keys)`` as the leader's lessor sees them."""
        ttl_fn = getattr(self.node, "lease_time_to_live", None)
        if ttl_fn is None:
            return self.applier.lessor.time_to_live(lease_id, time.monotonic())
        got: tuple[int, int, list[bytes]] = await ttl_fn(lease_id)
        return got

    # ------------------------------------------------------------------ lease expiry
    def start(self) -> None:
        self._expiry_task = asyncio.get_running_loop().create_task(self._expire_leases())

    async def stop(self) -> None:
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task

    async def _expire_leases(self) -> None:
        """On the leader: revoke expired leases through the log, like a client revoke."""
        was_leader = False
        first = True
        while True:
            if not first:
                await asyncio.sleep(LEASE_EXPIRY_INTERVAL)
            first = False
            if not self.node.is_leader:
                if was_leader:
                    self.applier.lessor.demote()
                was_leader = False
                continue
            now = time.monotonic()
            if not was_leader:
                self.applier.lessor.promote(now)
                was_leader = True
            expired = self.applier.lessor.expired(now)
            if not expired:
                continue
            try:
                await self.node.propose(internal_pb2.InternalRequest(
                    lease_expire=internal_pb2.LeaseExpire(ids=expired)))
            except Exception as err:  # noqa: BLE001 - retried on the next scan
                log.warning("lease.expire_failed", ids=len(expired), error=repr(err))
