"""What each gRPC service needs of the member: narrow interfaces, as etcd's v3rpc needs only
``RaftKV``, ``Lessor``, ``ClusterStatus`` ... of its server.

The adapters in this package take these, never the server's classes: the composition root
(``coord.server.server``) hands them ``coord.server.core.Core``, which provides all of them
(mypy checks that where it is passed). A test or a benchmark can pass anything with these
methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from coord.mvcc.watch import WatchHub
from coord.pb import internal_pb2, rpc_pb2


class Headers(Protocol):
    def fill_header(self, header: rpc_pb2.ResponseHeader, revision: bool = True) -> None:
        """cluster_id, member_id, raft_term; with ``revision``, the current revision where
        the response has none."""


class Proposer(Protocol):
    async def propose(self, req: internal_pb2.InternalRequest) -> Any:
        """Replicate ``req`` through the log, apply it, return what applying it answered."""

    async def read_barrier(self, serializable: bool) -> None:
        """Return once a read here sees every write acknowledged before the call (at once
        for a ``serializable`` read)."""


class RaftKV(Headers, Proposer, Protocol):
    """What KV needs: reads on the applied state, writes through the log."""

    def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse: ...

    def apply_read_only(self, req: internal_pb2.InternalRequest) -> Any:
        """Evaluate a request that cannot write (a read-only txn) on the applied state."""


class Leases(Headers, Proposer, Protocol):
    """What Lease needs: grant/revoke through the log, renewals and TTLs on the leader."""

    def new_lease_id(self) -> int: ...

    async def lease_renew(self, lease_id: int) -> int: ...

    async def lease_time_to_live(self, lease_id: int) -> tuple[int, int, list[bytes]]: ...

    def lease_ids_by_expiry(self) -> list[int]:
        """Every lease, soonest expiry first (etcd's order for LeaseLeases)."""


class MemberStatus(Headers, Protocol):
    """What Maintenance needs (its Snapshot call aside): the member's Raft status, sizes,
    hashes and leadership transfer."""

    @property
    def leader_id(self) -> int: ...
    @property
    def term(self) -> int: ...
    @property
    def committed_index(self) -> int: ...
    @property
    def applied_index(self) -> int: ...
    @property
    def is_learner(self) -> bool: ...

    def approximate_size(self) -> int: ...

    def hash_kv(self, revision: int) -> tuple[int, int]:
        """``(hash, compact_revision)`` of the store up to ``revision`` (0: current)."""

    async def transfer_leader(self, target: int) -> None: ...


class ClusterMembers(Headers, Protocol):
    """What Cluster needs: the member list and membership changes (checked by the member,
    which alone knows the table and how far learners got)."""

    def members(self) -> list[rpc_pb2.Member]: ...

    async def add_member(self, peers: Sequence[str], learner: bool) -> int:
        """Add the member listening on ``peers[0]`` (none of them may be in use); its id."""

    async def remove_member(self, member_id: int) -> None: ...

    async def promote_member(self, member_id: int) -> None: ...


class Watches(Headers, Protocol):
    """What Watch needs: the member's watch hub (an observer of its store)."""

    @property
    def watch_hub(self) -> WatchHub: ...
