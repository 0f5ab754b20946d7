"""Raft snapshots whose data lives in their file, not in memory.

The core asks its storage for the latest snapshot only to send it to a follower too far
behind for the log (``MsgSnap``). A snapshot's data is the whole store serialised — tens of
megabytes for 100,000 keys — so once its file is durable, :class:`FileBackedStorage` drops
the data and reads the file again when (rarely) asked. The file is the one
:class:`~coord.storage.SnapshotStore` wrote; the member keeps the newest two, and the one
referenced here is always the newest, so it is there when read.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import structlog

from coord.raft import (
    ConfState,
    MemoryStorage,
    Snapshot,
    SnapshotMetadata,
    SnapshotTemporarilyUnavailable,
)
from coord.storage import StorageError

log = structlog.get_logger("coord.snapfile")

_LEN = struct.Struct("<I")


def snap_file_prefix(cs: ConfState) -> bytes:
    """What precedes the snapshot data in a snapshot file's payload: the conf state."""
    head = json.dumps({"voters": list(cs.voters), "learners": list(cs.learners)}).encode()
    return _LEN.pack(len(head)) + head


def encode_snap_file(snap: Snapshot) -> bytes:
    return snap_file_prefix(snap.metadata.conf_state) + snap.data


def decode_snap_file(index: int, term: int, blob: bytes | memoryview) -> Snapshot:
    (n,) = _LEN.unpack_from(blob)
    head = json.loads(bytes(blob[_LEN.size:_LEN.size + n]))
    cs = ConfState(tuple(head["voters"]), tuple(head["learners"]))
    return Snapshot(SnapshotMetadata(index, term, cs), bytes(blob[_LEN.size + n:]))


class FileBackedStorage(MemoryStorage):
    """A ``MemoryStorage`` that, told where its latest snapshot is durable
    (:meth:`keep_on_disk`), holds that snapshot without its data and reads the data back
    from the file whenever the core asks for the snapshot."""

    def __init__(self, read: Callable[[Path], Snapshot]) -> None:
        super().__init__()
        self._read = read
        self._file: Path | None = None

    def keep_on_disk(self, index: int, path: Path) -> None:
        """The snapshot at ``index`` is durable in ``path``: drop its data from memory.
        Ignored if the storage's snapshot is no longer the one at ``index``."""
        snap = self._snapshot
        if snap.metadata.index != index:
            return
        self._snapshot = Snapshot(snap.metadata, b"")
        self._file = path

    @property
    def snapshot_file(self) -> Path | None:
        """The file the current snapshot's data is read from (None: held in memory)."""
        return self._file

    def snapshot(self) -> Snapshot:
        """The latest snapshot with its data (read from its file if it is on disk). If the
        file cannot be read, or holds another snapshot — neither happens unless something
        outside the member touched its directory — the core is told the snapshot is
        temporarily unavailable (it sends none and tries again later)."""
        snap = self._snapshot
        if self._file is None:
            return snap
        try:
            loaded = self._read(self._file)
        except (OSError, StorageError, ValueError) as err:
            log.error("snapshot.unreadable", path=str(self._file), error=repr(err))
            raise SnapshotTemporarilyUnavailable(str(err)) from err
        md = loaded.metadata
        if (md.index, md.term) != (snap.metadata.index, snap.metadata.term):
            log.error("snapshot.wrong_file", path=str(self._file), holds=(md.index, md.term),
                      expected=(snap.metadata.index, snap.metadata.term))
            raise SnapshotTemporarilyUnavailable(
                f"snapshot file {self._file} holds {md.index}/{md.term}, "
                f"expected {snap.metadata.index}/{snap.metadata.term}")
        return Snapshot(snap.metadata, loaded.data)

    def apply_snapshot(self, snap: Snapshot) -> None:
        super().apply_snapshot(snap)
        self._file = None

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        snap = super().create_snapshot(index, conf_state, data)
        self._file = None
        return snap
