"""Durable storage for coord: a segmented write-ahead log, snapshot files, the WAL records
of a Raft member (:mod:`coord.storage.records`) and the one writer of its WAL
(:mod:`coord.storage.wal_writer`).

Synchronous file code (the member runs it off the event loop, on ``WalWriter``'s thread,
or on the loop where that is cheaper). What is durable when each call returns is stated in
its docstring; the on-disk formats are described in :mod:`coord.storage.codec` and
:mod:`coord.storage.snapshot`.
"""

from coord.storage.codec import ENTRY, HARD_STATE, METADATA, SNAPSHOT_MARKER, Record
from coord.storage.errors import (
    CorruptSnapshotError,
    CorruptWALError,
    DataDirError,
    StorageError,
    WALClosedError,
    WALFailedError,
    WALLockedError,
    WALTruncatedError,
)
from coord.storage.snapshot import SnapshotFile, SnapshotStore
from coord.storage.wal import DEFAULT_CARRY_OVER, DEFAULT_SEGMENT_SIZE, WAL, SegmentInfo
from coord.storage.watermark import Mark, Watermark, WatermarkError

__all__ = [
    "DEFAULT_CARRY_OVER",
    "DEFAULT_SEGMENT_SIZE",
    "ENTRY",
    "HARD_STATE",
    "METADATA",
    "SNAPSHOT_MARKER",
    "WAL",
    "CorruptSnapshotError",
    "CorruptWALError",
    "DataDirError",
    "Mark",
    "Record",
    "SegmentInfo",
    "SnapshotFile",
    "SnapshotStore",
    "StorageError",
    "WALClosedError",
    "WALFailedError",
    "WALLockedError",
    "WALTruncatedError",
    "Watermark",
    "WatermarkError",
]
