"""Small file-system helpers shared by the WAL and the snapshotter (internal)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

SyncFn = Callable[[int], None]
"""Makes a file descriptor's data durable (``os.fdatasync`` by default); injectable in tests."""


def default_sync(fd: int) -> None:
    """``fdatasync`` where the platform has it, else ``fsync``."""
    fdatasync = getattr(os, "fdatasync", None)
    if fdatasync is not None:
        fdatasync(fd)
    else:  # pragma: no cover - macOS
        os.fsync(fd)


def fsync_dir(path: Path) -> None:
    """fsync a directory, making creations, renames and removals of its entries durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """``os.write`` until every byte is written (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def ensure_dir(path: Path) -> None:
    """Create ``path`` (and parents) if missing, fsyncing each parent whose entries changed."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        fsync_dir(d.parent)


_ZEROS = bytes(1 << 20)


def preallocate(fd: int, size: int) -> None:
    """Reserve blocks for the file up to ``size`` bytes (no-op where it is already that
    long, or where the file system cannot): later writes there change no file size."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is None or os.fstat(fd).st_size >= size:
        return
    try:
        fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise


def zeros_from(fd: int, start: int, size: int) -> bool:
    """Whether bytes ``start`` to ``size`` of the file are all zero. Ranges the file system
    reports as holes — unwritten preallocated blocks, with nothing in the page cache — are
    skipped without reading (``SEEK_DATA``); the rest is read a MiB at a time."""
    pos = start
    while pos < size:
        try:
            pos = os.lseek(fd, pos, os.SEEK_DATA)
            stop = min(size, os.lseek(fd, pos, os.SEEK_HOLE))
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return True  # nothing but holes up to the end of the file
            if exc.errno != errno.EINVAL:
                raise
            stop = size  # no SEEK_DATA here: read it all
        while pos < stop:
            chunk = os.pread(fd, min(len(_ZEROS), stop - pos), pos)
            if not chunk:
                return True
            if chunk != _ZEROS[: len(chunk)]:
                return False
            pos += len(chunk)
    return True
