"""The WAL records of a Raft member: how its entries, hard state, snapshot markers and
identity are encoded, and how a WAL read back at boot is replayed into them.

Record types (``coord.storage.codec``): ``ENTRY`` = term, index, type (``<QQB``) + data;
``HARD_STATE`` = term, vote, commit (``<QQQ``); ``SNAPSHOT_MARKER`` = index, term
(``<QQ``), written after the snapshot file is durable; ``METADATA`` = JSON
``{"member_id", "cluster_id"}``, the first record a fresh member writes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from coord.raft.types import Entry, EntryType, HardState
from coord.storage.codec import ENTRY, HARD_STATE, METADATA, SNAPSHOT_MARKER, Record

_ENT = struct.Struct("<QQB")
_HS = struct.Struct("<QQQ")
_MARK = struct.Struct("<QQ")


def encode_entry(e: Entry) -> bytes:
    return _ENT.pack(e.term, e.index, int(e.type)) + e.data


def decode_entry(b: bytes) -> Entry:
    term, index, typ = _ENT.unpack_from(b)
    return Entry(term, index, EntryType(typ), bytes(b[_ENT.size:]))


def entry_index(record: Record) -> int:
    """The index of the entry an ``ENTRY`` record holds, without decoding its data."""
    return int(_ENT.unpack_from(record.data)[1])


def entry_record(e: Entry) -> Record:
    return Record(ENTRY, encode_entry(e))


def hard_state_record(hs: HardState) -> Record:
    return Record(HARD_STATE, _HS.pack(hs.term, hs.vote, hs.commit))


def snapshot_marker_record(index: int, term: int) -> Record:
    return Record(SNAPSHOT_MARKER, _MARK.pack(index, term))


def metadata_record(member_id: int, cluster_id: int) -> Record:
    return Record(METADATA, json.dumps(
        {"member_id": member_id, "cluster_id": cluster_id}).encode())


def ready_records(marker: tuple[int, int] | None, entries: Sequence[Entry],
                  hard_state: HardState | None) -> list[Record]:
    """The records one Ready persists, in order: the snapshot marker (index, term) if a
    snapshot came with it, its entries, its hard state."""
    records: list[Record] = []
    if marker is not None:
        records.append(snapshot_marker_record(*marker))
    records.extend(Record(ENTRY, encode_entry(e)) for e in entries)
    if hard_state is not None:
        records.append(hard_state_record(hard_state))
    return records


def record_seqs(records: Sequence[Record], last: int) -> dict[int, int]:
    """Entry index -> WAL sequence number for the ``ENTRY`` records among ``records``, the
    last of which was written as sequence number ``last``."""
    first = last - len(records) + 1
    return {entry_index(rec): first + i for i, rec in enumerate(records) if rec.type == ENTRY}


@dataclass
class Replayed:
    """What a WAL's records say, in the order they were written."""

    entries: list[Entry] = field(default_factory=list)
    """The log as last written: an entry at index i replaced every earlier-written one >= i."""
    hard_state: HardState = field(default_factory=HardState)
    metadata: dict[str, Any] | None = None
    entry_seq: dict[int, int] = field(default_factory=dict)
    """Entry index -> the sequence number of the record that holds it."""


def replay(records: Iterable[Record], first_seq: int) -> Replayed:
    """Replay records read from a WAL whose first record has sequence ``first_seq``."""
    out = Replayed()
    entries = out.entries
    seq = first_seq
    for rec in records:
        if rec.type == ENTRY:
            e = decode_entry(rec.data)
            # Drop every earlier-written entry >= e.index. Not by position from the first
            # entry: the log jumps where a snapshot from the leader was installed (entries
            # 1..2, then 7.. after a snapshot at 6), so positions are not indexes.
            while entries and entries[-1].index >= e.index:
                entries.pop()
            entries.append(e)
            out.entry_seq[e.index] = seq
        elif rec.type == HARD_STATE:
            out.hard_state = HardState(*_HS.unpack(rec.data))
        elif rec.type == METADATA:
            out.metadata = json.loads(rec.data)
        seq += 1
    return out
