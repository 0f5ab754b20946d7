"""Small file-system helpers shared by the WAL and the snapshotter (internal)."""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import cast

import structlog

log = structlog.get_logger(__name__)

DIR_MODE = 0o700
"""Data, WAL and snapshot directories are created owner-only (etcd's 0700): they hold every
key and value of the store."""
FILE_MODE = 0o600
"""WAL segments, snapshots and the lock file: owner read/write only (etcd's 0600)."""

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
    """Create ``path`` (and parents) if missing, owner-only (:data:`DIR_MODE`), fsyncing each
    parent whose entries changed. An existing directory keeps its mode."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=DIR_MODE, exist_ok=True)
        fsync_dir(d.parent)


def _libc_fallocate() -> Callable[[int, int, int, int], int] | None:
    """The ``fallocate(2)`` system call through libc, where there is one (Linux). Not
    ``os.posix_fallocate``: where the file system cannot reserve blocks, glibc emulates that
    by writing a byte into every block — 16,384 writes for a 64 MiB segment, and they fail
    on a write-only descriptor."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], fn)


_fallocate = _libc_fallocate()


def preallocate(fd: int, size: int) -> bool:
    """Reserve blocks for the file up to ``size`` bytes, so that later writes there change no
    file size. Returns whether the file now has them. Never raises: where the file system
    cannot (no ``fallocate``), or the disk has not ``size`` bytes free, the file simply
    grows as it is written — slower fsyncs, nothing else."""
    try:
        if os.fstat(fd).st_size >= size:
            return True
        if _fallocate is None:
            return False
        if _fallocate(fd, 0, 0, size) == 0:
            return True
        err = ctypes.get_errno()
    except OSError as exc:
        err = exc.errno or 0
    if err not in (errno.EOPNOTSUPP, errno.ENOSYS):
        log.warning("storage.preallocate_failed", size=size, error=os.strerror(err))
    return False


_ZEROS = bytes(1 << 20)


def last_nonzero(fd: int, start: int, size: int) -> int | None:
    """The offset of the file's last non-zero byte from ``start`` to ``size``, or ``None`` if
    they are all zero. Ranges the file system reports as holes — unwritten preallocated
    blocks with nothing in the page cache — are skipped without reading (``SEEK_DATA``);
    the rest is read a MiB at a time."""
    found: int | None = None
    pos = start
    while pos < size:
        try:
            pos = os.lseek(fd, pos, os.SEEK_DATA)
            stop = min(size, os.lseek(fd, pos, os.SEEK_HOLE))
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                break  # nothing but holes up to the end of the file
            if exc.errno != errno.EINVAL:
                raise
            stop = size  # no SEEK_DATA here: read it all
        while pos < stop:
            chunk = os.pread(fd, min(len(_ZEROS), stop - pos), pos)
            if not chunk:
                return found
            if chunk != _ZEROS[: len(chunk)]:
                found = pos + len(chunk.rstrip(b"\0")) - 1
            pos += len(chunk)
    return found
