"""The storage layer's error hierarchy.

Every error raised on purpose by :mod:`coord.storage` derives from :class:`StorageError`, so a
caller can catch the whole layer with one clause and still tell the cases apart.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CorruptSnapshotError",
    "CorruptWALError",
    "DataDirError",
    "StorageError",
    "WALClosedError",
    "WALFailedError",
    "WALLockedError",
    "WALTruncatedError",
]


class StorageError(Exception):
    """Base class of every error raised by ``coord.storage``."""


class CorruptWALError(StorageError):
    """The WAL holds damaged data that is *not* a torn tail, so it cannot be repaired safely.

    Raised when a bad frame is followed by further valid data, when a non-last segment is
    damaged, or when segments are missing or do not join up. Nothing is modified on disk when
    this is raised. ``path`` and ``offset`` name the first damaged byte that was found.
    """

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(f"corrupt WAL: {path} at offset {offset}: {reason}")


class WALTruncatedError(CorruptWALError):
    """The WAL ends before a record the data dir recorded as durable: records were lost
    (a segment deleted, a file cut short, an older copy put back). Nothing is modified."""

    def __init__(self, path: Path, last_seq: int, must_cover: int) -> None:
        self.last_seq = last_seq
        self.must_cover = must_cover
        what = f"ends at record {last_seq}" if last_seq else "holds no records"
        super().__init__(
            path,
            0,
            f"the WAL {what}, but records up to {must_cover} were durable: "
            f"{must_cover - last_seq} records are missing (a segment deleted or cut short)",
        )


class CorruptSnapshotError(StorageError):
    """A snapshot file failed its checks (magic, header, length or CRC)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"corrupt snapshot: {path}: {reason}")


class WALLockedError(StorageError):
    """Another open WAL (in this or another process) holds the directory's lock."""


class WALClosedError(StorageError):
    """The WAL was used after :meth:`WAL.close`."""


class WALFailedError(StorageError):
    """A write or fsync failed earlier; the WAL refuses all further writes.

    After a failed fsync the kernel may have dropped dirty pages while clearing the error, so
    a retry could "succeed" without the data being on disk. The only safe recovery is to close
    the WAL, and reopen it (which re-reads and re-verifies what really is on disk).
    """


class DataDirError(StorageError):
    """A data dir that cannot be used as it is: not a directory, not writable, damaged, or
    holding less than it shows it held. The message says what is wrong and what to do."""
