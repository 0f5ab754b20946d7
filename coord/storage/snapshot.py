"""Snapshot files: written atomically, verified on load, newest valid one wins.

Directory layout::

    <dir>/<index:016x>-<term:016x>.snap        complete snapshots
    <dir>/<index:016x>-<term:016x>.snap.tmp    a save in progress (ignored; removed by purge)
    <dir>/<index:016x>-<term:016x>.snap.broken a snapshot that failed its checks on load

File format (little-endian)::

    magic   8s   b"RCSNAP\\x00\\x01"
    index   u64
    term    u64
    length  u64  payload length; the file is exactly 48 + length bytes
    crc     u32  zlib.crc32(payload)
    hcrc    u32  zlib.crc32 of the 36 header bytes above
    pad     8x
    payload

Invariants:

* A ``.snap`` file is only ever created by renaming a fully written and fsync'd temporary
  file, followed by a directory fsync: when :meth:`SnapshotStore.save` returns, the snapshot
  is durable, and a crash at any point leaves either no new ``.snap`` or a complete one.
* :meth:`SnapshotStore.load_newest` never returns data that failed its CRC; a damaged newest
  snapshot is renamed ``.broken`` (with a warning) and the previous valid one is used.
* Single writer: one process saves and purges at a time (the WAL's lock guards the node).
"""

from __future__ import annotations

import mmap
import os
import re
import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from coord.storage._fs import FILE_MODE, SyncFn, default_sync, ensure_dir, fsync_dir, write_all
from coord.storage.errors import CorruptSnapshotError

__all__ = ["SnapshotFile", "SnapshotStore"]

log = structlog.get_logger(__name__)

_MAGIC = b"RCSNAP\x00\x01"
_HEADER = struct.Struct("<8sQQQII8x")
_HEADER_SIZE = _HEADER.size  # 48
_HCRC_SPAN = 36
_NAME_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """A verified snapshot: the Raft index and term it covers and the caller's payload."""

    index: int
    term: int
    data: bytes
    path: Path | None = field(default=None, compare=False)
    """The file it was read from."""


Payload = bytes | Sequence[bytes | memoryview]
"""A snapshot payload: bytes, or the pieces that make it, in order (written one after the
other, never joined in memory)."""


def _pieces(data: Payload) -> Sequence[bytes | memoryview]:
    return (data,) if isinstance(data, bytes) else data


def _encode_header(index: int, term: int, data: Payload) -> bytes:
    length, crc = 0, 0
    for piece in _pieces(data):
        length += len(piece)
        crc = zlib.crc32(piece, crc)
    head = _HEADER.pack(_MAGIC, index, term, length, crc, 0)[:_HCRC_SPAN]
    return head + zlib.crc32(head).to_bytes(4, "little") + b"\0" * 8


def decode_snapshot(path: Path, blob: bytes) -> SnapshotFile:
    """Verify and decode a snapshot file's bytes; raise :class:`CorruptSnapshotError`."""
    if len(blob) < _HEADER_SIZE:
        raise CorruptSnapshotError(path, f"file too short ({len(blob)} bytes)")
    magic, index, term, length, crc, hcrc = _HEADER.unpack_from(blob, 0)
    if magic != _MAGIC:
        raise CorruptSnapshotError(path, "bad magic")
    if zlib.crc32(blob[:_HCRC_SPAN]) != hcrc:
        raise CorruptSnapshotError(path, "header CRC mismatch")
    if len(blob) != _HEADER_SIZE + length:
        raise CorruptSnapshotError(
            path, f"file is {len(blob)} bytes, header says {_HEADER_SIZE + length}"
        )
    data = blob[_HEADER_SIZE:]
    if zlib.crc32(data) != crc:
        raise CorruptSnapshotError(path, "payload CRC mismatch")
    m = _NAME_RE.match(path.name)
    if m and (int(m.group(1), 16), int(m.group(2), 16)) != (index, term):
        raise CorruptSnapshotError(path, f"header says index {index} term {term}, name disagrees")
    return SnapshotFile(int(index), int(term), data, path)


class SnapshotStore:
    """The snapshot files of one node, in one directory (created if missing)."""

    def __init__(self, directory: str | os.PathLike[str], *, sync_fn: SyncFn | None = None):
        self._dir = Path(directory)
        self._sync_fn = sync_fn or default_sync
        # save and purge may run on different threads (a member writes snapshot files on
        # its own thread and purges after releasing WAL segments on the WAL thread): one at
        # a time, so a purge never deletes the temporary file of a save in progress.
        self._lock = threading.Lock()
        ensure_dir(self._dir)

    @property
    def directory(self) -> Path:
        """The snapshot directory."""
        return self._dir

    def entries(self) -> list[tuple[int, int, Path]]:
        """``(index, term, path)`` of every ``.snap`` file by name, oldest first (unverified)."""
        found: list[tuple[int, int, Path]] = []
        for entry in self._dir.iterdir():
            m = _NAME_RE.match(entry.name)
            if m:
                found.append((int(m.group(1), 16), int(m.group(2), 16), entry))
        found.sort(key=lambda t: (t[0], t[1]))
        return found

    def save(self, index: int, term: int, data: Payload) -> Path:
        """Write the snapshot for ``(index, term)`` atomically; return its path.

        When this returns the snapshot is durable (file fsync, rename, directory fsync).
        Saving the same (index, term) again replaces the file atomically.
        """
        if index < 0 or term < 0:
            raise ValueError("index and term must be non-negative")
        with self._lock:
            return self._save(index, term, data)

    def _save(self, index: int, term: int, data: Payload) -> Path:
        final = self._dir / f"{index:016x}-{term:016x}.snap"
        tmp = final.with_name(final.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        size = 0
        try:
            write_all(fd, _encode_header(index, term, data))
            for piece in _pieces(data):
                write_all(fd, piece)
                size += len(piece)
            self._sync_fn(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        fsync_dir(self._dir)
        log.info("snapshot.saved", path=str(final), index=index, term=term, bytes=size)
        return final

    @staticmethod
    def load(path: Path) -> SnapshotFile:
        """Read and verify one snapshot file (:class:`CorruptSnapshotError` if it fails)."""
        return decode_snapshot(path, path.read_bytes())

    @staticmethod
    def map_payload(path: Path) -> memoryview:
        """The payload of a snapshot file this process wrote, mapped read-only (not read,
        not verified): its pages are read from the page cache only where the view is used,
        and stay readable if the file is purged meanwhile. The mapping goes when the last
        view of it does."""
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return memoryview(mapped)[_HEADER_SIZE:]

    def load_newest(self) -> SnapshotFile | None:
        """The newest snapshot that passes its checks, or ``None`` if there is none.

        Damaged newer files are renamed to ``.broken`` (fsync'd) with a warning, so they are
        skipped for good; temporary files are ignored.
        """
        snap, broken = self.newest_valid()
        for path, reason in broken:
            self.quarantine(path, reason)
        return snap

    def newest_valid(self) -> tuple[SnapshotFile | None, list[tuple[Path, str]]]:
        """The newest snapshot that passes its checks (or ``None``), and the newer files
        that failed them with the reason each: nothing is renamed, so a caller that cannot
        use the older snapshot can refuse to start and leave the directory as it was."""
        broken: list[tuple[Path, str]] = []
        for _index, _term, path in reversed(self.entries()):
            try:
                return decode_snapshot(path, path.read_bytes()), broken
            except CorruptSnapshotError as exc:
                broken.append((path, exc.reason))
        return None, broken

    def quarantine(self, path: Path, reason: str) -> None:
        """Rename a damaged snapshot ``.broken`` (fsync'd), with a warning."""
        log.warning("snapshot.corrupt_skipped", path=str(path), reason=reason,
                    renamed_to=path.name + ".broken")
        os.rename(path, path.with_name(path.name + ".broken"))
        fsync_dir(self._dir)

    def purge(self, keep: int = 5) -> list[Path]:
        """Delete all but the ``keep`` newest ``.snap`` files, and leftover ``.tmp`` files.

        Returns the deleted paths; the removals are durable when it returns. Run it only
        after the newest snapshot is known good (e.g. just after :meth:`save`).
        """
        if keep < 1:
            raise ValueError("keep must be at least 1")
        with self._lock:
            return self._purge(keep)

    def _purge(self, keep: int) -> list[Path]:
        doomed = [p for _, _, p in self.entries()[:-keep]]
        doomed += sorted(self._dir.glob("*.snap.tmp"))
        for path in doomed:
            path.unlink()
        if doomed:
            fsync_dir(self._dir)
            log.info("snapshot.purged", count=len(doomed), keep=keep)
        return doomed
