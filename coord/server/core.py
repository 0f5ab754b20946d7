"""Core: what the gRPC services see of a member — the node, the applier, the lessor.

It hides whether the member is a single node or a Raft cluster member: the services call
``propose`` (a state change through the log), ``read_barrier`` (before a linearizable
read), ``fill_header`` and the read-side accessors, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any, Protocol

import structlog

from coord.api.proto import internal_pb2, rpc_pb2
from coord.errors import CoordError, NotLeader, RequestTimeout
from coord.server.apply import Applier
from coord.server.config import ServerConfig

log = structlog.get_logger("coord.core")

class BadLeaderTransferee(CoordError):
    code_name = "FAILED_PRECONDITION"
    message = "etcdserver: bad leader transferee"


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
        return await self.node.propose(req)

    async def read_barrier(self, serializable: bool) -> None:
        """Wait until a read here sees every write acknowledged before the call."""
        if not serializable:
            await self.node.read_index()

    def apply_read_only(self, req: internal_pb2.InternalRequest) -> Any:
        """Evaluate a request that cannot write (a read-only txn) on the applied state."""
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
            out: list[rpc_pb2.Member] = table.to_pb()
            for m in out:  # this member's own attributes, before its publish is applied
                if self.node.member_id == m.ID and not m.clientURLs:
                    m.name = self.config.name
                    m.clientURLs.append(f"http://{self.config.listen_client}")
            return out
        ids = self.config.member_ids
        out = []
        for name, peer in self.config.initial_cluster.items():
            m = rpc_pb2.Member(ID=ids[name], name=name, peerURLs=[f"http://{peer}"])
            if name == self.config.name:
                m.clientURLs.append(f"http://{self.config.listen_client}")
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

    # ------------------------------------------------------------------ leases
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
