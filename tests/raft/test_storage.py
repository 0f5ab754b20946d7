from __future__ import annotations

import pytest

from coord.raft import (
    ConfState,
    Entry,
    HardState,
    LogCompacted,
    LogUnavailable,
    MemoryStorage,
    RaftError,
    Snapshot,
    SnapshotMetadata,
    SnapshotOutOfDate,
)


def storage_with(*terms: int, start: int = 1) -> MemoryStorage:
    s = MemoryStorage()
    if start > 1:
        s.apply_snapshot(Snapshot(SnapshotMetadata(start - 1, terms[0], ConfState((1,)))))
    s.append([Entry(t, start + i) for i, t in enumerate(terms)])
    return s


def test_empty_storage() -> None:
    s = MemoryStorage()
    assert (s.first_index(), s.last_index()) == (1, 0)
    assert s.term(0) == 0
    assert s.initial_state() == (HardState(), ConfState())
    with pytest.raises(LogUnavailable):
        s.term(1)


def test_term_and_entries_bounds() -> None:
    s = storage_with(3, 4, 5, start=4)  # snapshot at 3 (term 3), entries 4..6
    assert s.first_index() == 4 and s.last_index() == 6
    assert [s.term(i) for i in (3, 4, 5, 6)] == [3, 3, 4, 5]
    with pytest.raises(LogCompacted):
        s.term(2)
    with pytest.raises(LogCompacted):
        s.entries(3, 5)
    with pytest.raises(LogUnavailable):
        s.entries(4, 8)
    assert [e.index for e in s.entries(4, 7)] == [4, 5, 6]
    # max_size keeps at least one entry.
    assert [e.index for e in s.entries(4, 7, max_size=1)] == [4]


def test_append_truncates_conflicting_suffix() -> None:
    s = storage_with(1, 1, 1)
    s.append([Entry(2, 2), Entry(2, 3), Entry(2, 4)])
    assert [(e.term, e.index) for e in s.entries(1, 5)] == [(1, 1), (2, 2), (2, 3), (2, 4)]
    with pytest.raises(RaftError):
        s.append([Entry(2, 7)])  # gap


def test_append_skips_compacted_prefix() -> None:
    s = storage_with(1, 1, 1, 1)
    s.compact(3)
    s.append([Entry(1, 2), Entry(1, 3), Entry(2, 4), Entry(2, 5)])
    assert s.first_index() == 4 and s.last_index() == 5 and s.term(5) == 2


def test_compact_and_snapshots() -> None:
    s = storage_with(1, 1, 2, 2)
    snap = s.create_snapshot(3, ConfState((1, 2)), b"state")
    assert snap.metadata.index == 3 and snap.metadata.term == 2
    s.compact(3)
    assert s.first_index() == 4 and s.term(3) == 2
    with pytest.raises(LogCompacted):
        s.compact(2)
    with pytest.raises(SnapshotOutOfDate):
        s.create_snapshot(2, ConfState(), b"")
    with pytest.raises(LogUnavailable):
        s.compact(9)


def test_apply_snapshot_replaces_log() -> None:
    s = storage_with(1, 1)
    s.apply_snapshot(Snapshot(SnapshotMetadata(10, 3, ConfState((1, 2, 3))), b"x"))
    assert (s.first_index(), s.last_index(), s.term(10)) == (11, 10, 3)
    assert s.initial_state()[1] == ConfState((1, 2, 3))
    with pytest.raises(SnapshotOutOfDate):
        s.apply_snapshot(Snapshot(SnapshotMetadata(10, 3, ConfState())))
