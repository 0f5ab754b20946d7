"""Value types of the Raft core: messages, entries, states, snapshots and the Ready batch.

Everything here is a plain value. Messages, entries and snapshots are frozen so they can be
shared between nodes by a simulator without copying; the core never mutates them.
Protobuf appears only at the transport/WAL edge (a codec outside this package).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum


class MessageType(IntEnum):
    """Every message the core exchanges. HUP, BEAT, CHECK_QUORUM are local (term 0)."""

    HUP = 0
    BEAT = 1
    PROP = 2
    APP = 3
    APP_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    PRE_VOTE = 7
    PRE_VOTE_RESP = 8
    SNAP = 9
    HEARTBEAT = 10
    HEARTBEAT_RESP = 11
    UNREACHABLE = 12
    SNAP_STATUS = 13
    CHECK_QUORUM = 14
    TRANSFER_LEADER = 15
    TIMEOUT_NOW = 16
    READ_INDEX = 17
    READ_INDEX_RESP = 18


#: Messages that only the local node may feed to itself; ``RawNode.step`` refuses them.
NONE = 0
"""No node: the leader a node does not know, the vote it has not cast."""

LOCAL_MESSAGES = frozenset(
    {MessageType.HUP, MessageType.BEAT, MessageType.CHECK_QUORUM, MessageType.UNREACHABLE,
     MessageType.SNAP_STATUS}
)
#: Responses that may only leave the node once the Ready that produced them is durable.
AFTER_PERSIST_MESSAGES = frozenset(
    {MessageType.APP_RESP, MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP, MessageType.VOTE}
)


class EntryType(IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``(term, index)`` identifies it uniquely (Log Matching property)."""

    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """The state that must be durable before any message depending on it is sent."""

    term: int = 0
    vote: int = 0
    commit: int = 0

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote == 0 and self.commit == 0


@dataclass(frozen=True, slots=True)
class ConfState:
    """A membership configuration. ``voters`` and ``learners`` are disjoint and sorted."""

    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    index: int
    term: int
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """State-machine image covering the log up to and including ``metadata.index``."""

    metadata: SnapshotMetadata
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.metadata.index == 0


EMPTY_SNAPSHOT = Snapshot(SnapshotMetadata(0, 0, ConfState()))


class ConfChangeType(IntEnum):
    ADD_NODE = 0
    REMOVE_NODE = 1
    ADD_LEARNER_NODE = 2


_CC_HEADER = struct.Struct(">BQ")


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A single-member change. Encoded as the data of a CONF_CHANGE entry."""

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    def encode(self) -> bytes:
        return _CC_HEADER.pack(int(self.type), self.node_id) + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        if len(data) < _CC_HEADER.size:
            raise ValueError(f"conf change too short: {len(data)} bytes")
        kind, node_id = _CC_HEADER.unpack_from(data)
        return cls(ConfChangeType(kind), node_id, bytes(data[_CC_HEADER.size :]))


@dataclass(frozen=True, slots=True)
class Message:
    """A Raft message. ``term == 0`` marks a local message (HUP, BEAT, PROP from the app...).

    Field use by type: APP carries ``log_term``/``index`` of the entry preceding
    ``entries`` and the leader's ``commit``; APP_RESP carries the follower's last matching
    ``index`` or, with ``reject``, the rejected index plus ``reject_hint``/``log_term`` (the
    follower's guess of the last entry that may match); VOTE/PRE_VOTE carry the candidate's
    last ``log_term``/``index``; HEARTBEAT carries ``commit`` and a ReadIndex ``context``;
    READ_INDEX/READ_INDEX_RESP carry the request ``context`` and (response) the read ``index``.
    """

    type: MessageType
    to: int
    frm: int
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    snapshot: Snapshot | None = None
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""


class StateRole(IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    PRE_CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile, informational state: who leads and our role. Never persisted."""

    leader: int
    role: StateRole


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex result: reads issued with ``request_ctx`` may be served once the local
    state machine has applied ``index``."""

    index: int
    request_ctx: bytes


@dataclass(slots=True)
class Ready:
    """One batch of work for the driver; see docs/raft-api.md for the order of handling.

    Invariants: ``entries`` are contiguous; every committed entry is either already in
    stable storage or in ``entries`` of this same Ready (so persisting first is enough);
    ``messages_after_persist`` must not be sent before this Ready's snapshot, entries and
    hard state are durable.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    messages_after_persist: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    must_sync: bool = False


def entry_size(e: Entry) -> int:
    """Size used for flow control and batching limits (payload plus a small header)."""
    return len(e.data) + 16


def limit_size(entries: list[Entry], max_size: int | None) -> list[Entry]:
    """The longest prefix of ``entries`` within ``max_size`` bytes, but at least one entry."""
    if max_size is None or not entries:
        return entries
    total = 0
    for i, e in enumerate(entries):
        total += entry_size(e)
        if total > max_size and i > 0:
            return entries[:i]
    return entries
