"""FileBackedStorage: a snapshot whose file is durable is held without its data, and the
data is read from the file whenever the Raft core asks for the snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from coord.raft import (
    ConfState,
    Entry,
    Snapshot,
    SnapshotMetadata,
    SnapshotTemporarilyUnavailable,
)
from coord.server.snapfile import FileBackedStorage, decode_snap_file, encode_snap_file
from coord.storage import SnapshotStore

CS = ConfState((1, 2, 3), ())


def _storage(store: SnapshotStore, reads: list[Path]) -> FileBackedStorage:
    def read(path: Path) -> Snapshot:
        reads.append(path)
        f = SnapshotStore.load(path)
        return decode_snap_file(f.index, f.term, f.data)

    s = FileBackedStorage(read)
    s.append([Entry(1, i) for i in range(1, 11)])
    return s


def test_data_is_dropped_once_on_disk_and_read_back_when_asked(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    reads: list[Path] = []
    s = _storage(store, reads)
    data = b"state" * 1000
    snap = s.create_snapshot(8, CS, data)
    assert s.snapshot() is snap and not reads  # not on disk yet: held in memory
    path = store.save(8, 1, encode_snap_file(snap))
    s.keep_on_disk(8, path)
    assert s._snapshot.data == b"" and s.snapshot_file == path
    got = s.snapshot()
    assert reads == [path]
    assert got == Snapshot(SnapshotMetadata(8, 1, CS), data)


def test_a_newer_snapshot_replaces_the_file_reference(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    reads: list[Path] = []
    s = _storage(store, reads)
    snap = s.create_snapshot(5, CS, b"five")
    s.keep_on_disk(5, store.save(5, 1, encode_snap_file(snap)))
    s.create_snapshot(9, CS, b"nine")  # created, its file not yet written
    assert s.snapshot_file is None and s.snapshot().data == b"nine"
    s.keep_on_disk(5, tmp_path / "stale")  # a late call for an older snapshot: ignored
    assert s.snapshot_file is None
    leader = Snapshot(SnapshotMetadata(20, 3, CS), b"from the leader")
    s.apply_snapshot(leader)
    assert s.snapshot_file is None and s.snapshot() == leader
    assert not reads


def test_a_file_that_cannot_serve_the_snapshot_makes_it_temporarily_unavailable(
        tmp_path: Path) -> None:
    """A file holding another snapshot, a damaged one or a missing one: the core is told
    the snapshot is temporarily unavailable (it sends none and retries), never handed
    wrong or partial data, and the member's loop does not die of it."""
    store = SnapshotStore(tmp_path)
    s = _storage(store, [])
    snap = s.create_snapshot(8, CS, b"eight")
    other = store.save(7, 1, encode_snap_file(Snapshot(SnapshotMetadata(7, 1, CS), b"x")))
    s.keep_on_disk(8, other)
    with pytest.raises(SnapshotTemporarilyUnavailable, match="holds 7/1, expected 8/1"):
        s.snapshot()
    s.create_snapshot(9, CS, b"nine")
    path = store.save(9, 1, encode_snap_file(Snapshot(SnapshotMetadata(9, 1, CS), b"nine")))
    s.keep_on_disk(9, path)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(SnapshotTemporarilyUnavailable, match="CRC"):
        s.snapshot()
    path.unlink()
    with pytest.raises(SnapshotTemporarilyUnavailable):
        s.snapshot()
    assert snap.data == b"eight"


def test_payload_pieces_and_the_mapped_payload(tmp_path: Path) -> None:
    """A payload given in pieces is written as their concatenation (one CRC over all);
    the mapped payload is the file's payload."""
    store = SnapshotStore(tmp_path)
    pieces: list[bytes | memoryview] = [b"ab", memoryview(b"--cd--")[2:4], b"", b"ef" * 5000]
    path = store.save(3, 1, pieces)
    whole = b"".join(bytes(p) for p in pieces)
    assert SnapshotStore.load(path).data == whole
    newest = store.load_newest()
    assert newest is not None and newest.data == whole and newest.path == path
    assert bytes(SnapshotStore.map_payload(path)) == whole
