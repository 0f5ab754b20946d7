"""The codec between ``coord.raft`` dataclasses and ``raft.proto`` (the peer wire)."""

from __future__ import annotations

from coord.pb import raft_pb2
from coord.raft import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)


def entry_to_pb(e: Entry) -> raft_pb2.RaftEntry:
    return raft_pb2.RaftEntry(term=e.term, index=e.index, type=int(e.type), data=e.data)


def entry_from_pb(p: raft_pb2.RaftEntry) -> Entry:
    return Entry(p.term, p.index, EntryType(p.type), p.data)


def snapshot_to_pb(s: Snapshot) -> raft_pb2.RaftSnapshot:
    md = s.metadata
    return raft_pb2.RaftSnapshot(index=md.index, term=md.term, voters=md.conf_state.voters,
                                 learners=md.conf_state.learners, data=s.data)


def snapshot_from_pb(p: raft_pb2.RaftSnapshot) -> Snapshot:
    cs = ConfState(tuple(p.voters), tuple(p.learners))
    return Snapshot(SnapshotMetadata(p.index, p.term, cs), p.data)


def message_to_pb(m: Message) -> raft_pb2.RaftMessage:
    pb = raft_pb2.RaftMessage(
        type=int(m.type), to=m.to, term=m.term, log_term=m.log_term, index=m.index,
        entries=[entry_to_pb(e) for e in m.entries], commit=m.commit, reject=m.reject,
        reject_hint=m.reject_hint, context=m.context)
    setattr(pb, "from", m.frm)
    if m.snapshot is not None:
        pb.snapshot.CopyFrom(snapshot_to_pb(m.snapshot))
        pb.has_snapshot = True
    return pb


def message_from_pb(p: raft_pb2.RaftMessage) -> Message:
    return Message(
        MessageType(p.type), p.to, getattr(p, "from"), p.term, p.log_term, p.index,
        tuple(entry_from_pb(e) for e in p.entries), p.commit,
        snapshot_from_pb(p.snapshot) if p.has_snapshot else None,
        p.reject, p.reject_hint, p.context)


def wire_size(m: Message) -> int:
    """About how many bytes ``m`` takes on the wire (its payloads plus a fixed allowance
    for the header fields), without encoding it: what the sender budgets batches by."""
    size = 128 + len(m.context)
    for e in m.entries:
        size += 32 + len(e.data)
    if m.snapshot is not None:
        size += 128 + len(m.snapshot.data) + 10 * (len(m.snapshot.metadata.conf_state.voters)
                                                  + len(m.snapshot.metadata.conf_state.learners))
    return size
