"""coord.raft — a pure, deterministic Raft consensus core in the style of etcd-io/raft.

The core is a state machine: inputs are ``tick()``, ``step(msg)`` and proposals; output is
a ``Ready`` (entries and hard state to persist, messages to send, committed entries to
apply) that the driver handles and acknowledges with ``advance()``. It performs no I/O,
reads no clock and draws randomness only from the ``random.Random`` in its ``Config``, so
the same inputs always give the same outputs (which is what makes the simulator work).

Features: randomized election timeouts, pre-vote, check-quorum with leader lease,
replication with fast conflict backtracking, flow control (probe / replicate / snapshot,
inflight window, bytes per message), snapshots to lagging followers, ReadIndex (SAFE and
LEASE_BASED), leader transfer, and membership changes.

Membership: one change at a time. Each ConfChange adds, removes, promotes or demotes a
single member, takes effect when its entry is *applied* (not when appended), and a leader
refuses a new change while an earlier one is unapplied (``pending_conf_index``), and
until the no-op of its own term is applied. Any two majorities of configurations that
differ by one voter overlap, so single-member steps are safe without joint consensus
(Raft thesis §4.1), and they cover everything raftcron needs (add/remove a member,
add a learner and promote it). Joint consensus (etcd's ConfChangeV2) would add a second
quorum everywhere votes and commits are counted, for changes we never make; we chose the
simpler rule. Waiting for the own-term no-op closes the known hole in single-server
changes across leader changes (Ongaro, raft-dev 2015).

Randomness: election timeouts are drawn from [election_tick, 2*election_tick - 1] with
``Config.rng``. There is no module-global RNG.
"""

from coord.raft.config import KNOWN_BUGS, Config, ReadOnlyOption
from coord.raft.describe import (
    describe_entry,
    describe_hard_state,
    describe_message,
    describe_ready,
    describe_snapshot,
)
from coord.raft.errors import (
    InvalidConfig,
    LogCompacted,
    LogUnavailable,
    ProposalDropped,
    RaftError,
    SnapshotOutOfDate,
    SnapshotTemporarilyUnavailable,
    StepLocalMessage,
)
from coord.raft.progress import ProgressState
from coord.raft.rawnode import ProgressView, RawNode, Status
from coord.raft.storage import MemoryStorage, Storage
from coord.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Snapshot,
    SnapshotMetadata,
    SoftState,
    StateRole,
)

__all__ = [
    "KNOWN_BUGS",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Config",
    "Entry",
    "EntryType",
    "HardState",
    "InvalidConfig",
    "LogCompacted",
    "LogUnavailable",
    "MemoryStorage",
    "Message",
    "MessageType",
    "ProgressState",
    "ProgressView",
    "ProposalDropped",
    "RaftError",
    "RawNode",
    "ReadOnlyOption",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotMetadata",
    "SnapshotOutOfDate",
    "SnapshotTemporarilyUnavailable",
    "SoftState",
    "StateRole",
    "Status",
    "StepLocalMessage",
    "Storage",
    "describe_entry",
    "describe_hard_state",
    "describe_message",
    "describe_ready",
    "describe_snapshot",
]
