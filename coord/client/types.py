"""Plain result types of the client: immutable, detached from protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from coord.pb import kv_pb2


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, kv: kv_pb2.KeyValue) -> KeyValue:
        return cls(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


@dataclass(frozen=True, slots=True)
class Header:
    cluster_id: int
    member_id: int
    revision: int
    raft_term: int


@dataclass(frozen=True, slots=True)
class RangeResult:
    header: Header
    kvs: list[KeyValue]
    count: int
    more: bool

    @property
    def revision(self) -> int:
        return self.header.revision


@dataclass(frozen=True, slots=True)
class PutResult:
    header: Header
    prev_kv: KeyValue | None

    @property
    def revision(self) -> int:
        return self.header.revision


@dataclass(frozen=True, slots=True)
class DeleteResult:
    header: Header
    deleted: int
    prev_kvs: list[KeyValue]

    @property
    def revision(self) -> int:
        return self.header.revision




@dataclass(frozen=True, slots=True)
class TxnResult:
    header: Header
    succeeded: bool
    responses: list[OpResult] = field(default_factory=list)

    @property
    def revision(self) -> int:
        return self.header.revision


OpResult: TypeAlias = "RangeResult | PutResult | DeleteResult | TxnResult"


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    id: int
    ttl: int
    revision: int


@dataclass(frozen=True, slots=True)
class LeaseTTL:
    id: int
    ttl: int
    granted_ttl: int
    keys: list[bytes]


class EventType:
    PUT = 0
    DELETE = 1


@dataclass(frozen=True, slots=True)
class Event:
    type: int
    kv: KeyValue
    prev_kv: KeyValue | None

    @property
    def is_put(self) -> bool:
        return self.type == EventType.PUT


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """Events of one watch response; ``revision`` is the header revision."""

    revision: int
    events: list[Event]


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str]
    is_learner: bool


@dataclass(frozen=True, slots=True)
class Status:
    header: Header
    version: str
    db_size: int
    leader: int
    raft_index: int
    raft_term: int
    raft_applied_index: int
