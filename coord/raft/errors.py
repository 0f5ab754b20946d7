"""The core's small typed error hierarchy."""

from __future__ import annotations


class RaftError(Exception):
    """Base class of every error raised by ``coord.raft``."""


class InvalidConfig(RaftError):
    """A ``Config`` failed validation."""


class LogCompacted(RaftError):
    """The requested index is older than the first available entry (compacted away)."""


class LogUnavailable(RaftError):
    """The requested index is beyond the last entry."""


class SnapshotOutOfDate(RaftError):
    """A snapshot older than (or equal to) the current one was offered."""


class SnapshotTemporarilyUnavailable(RaftError):
    """The storage cannot produce its snapshot right now (etcd-io/raft's
    ErrSnapshotTemporarilyUnavailable); the leader tries again later."""


class ProposalDropped(RaftError):
    """The proposal was not appended: no leader, a transfer in progress, or a pending
    configuration change. The caller may retry later."""


class StepLocalMessage(RaftError):
    """``RawNode.step`` was given a message type that only the node itself may create."""
