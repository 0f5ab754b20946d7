"""Opening a member's data dir at start: what may be repaired, what must stop the member.

A member's data dir holds ``wal/`` (the log), ``snap/`` (snapshot files) and
``wal.watermark`` (the last WAL record known durable, :mod:`coord.storage.watermark`).
Recovery never loses data silently:

* a torn last record (a crash mid-write: never acknowledged) is dropped, with a warning
  naming it;
* anything else that is missing or damaged stops the start with a :class:`DataDirError`
  that says what is wrong and what to do (the CLI prints it as one ``Error:`` line, exit
  3), and leaves the files as they were: a damaged record, a WAL that ends before the
  watermark (a segment deleted or cut short), snapshots without a WAL, a gap between the
  newest usable snapshot and the log (e.g. the newest snapshot is damaged and the log no
  longer reaches back to the one before), a file where the data dir should be, a data dir
  that cannot be written.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from coord.storage import (
    WAL,
    CorruptWALError,
    DataDirError,
    Record,
    SnapshotFile,
    SnapshotStore,
    StorageError,
    WALTruncatedError,
    Watermark,
    WatermarkError,
)

log = structlog.get_logger("coord.recovery")

WATERMARK_NAME = "wal.watermark"

RESTORE = ("To recover: in a cluster, remove this member (etcdctl member remove ID), empty "
           "its data dir and add it back (etcdctl member add, then start it with "
           "--initial-cluster-state existing); a one-member cluster: restore the data dir "
           "from a backup.")


@dataclass
class Opened:
    """What :func:`open_data_dir` found: the newest usable snapshot file, the open WAL and
    its records, and the newer snapshot files that failed their checks."""

    snapshot: SnapshotFile | None
    wal: WAL
    records: list[Record]
    watermark: Watermark
    broken: list[tuple[Path, str]] = field(default_factory=list)


def os_problem(data_dir: Path, err: OSError) -> DataDirError:
    """A data dir problem found by the file system, in words."""
    where = err.filename or data_dir
    if err.errno == errno.EROFS:
        what = "is on a read-only file system"
    elif err.errno in (errno.EACCES, errno.EPERM):
        what = "is not writable by this user"
    elif err.errno in (errno.ENOTDIR, errno.EEXIST):
        what = "is not a directory" if not Path(where).is_dir() else "is in the way"
    elif err.errno == errno.ENOSPC:
        what = "is on a full file system"
    else:
        what = f"cannot be used ({err.strerror or err})"
    return DataDirError(f"data dir {data_dir}: {where} {what}")


def open_data_dir(data_dir: Path, snaps: SnapshotStore) -> Opened:
    """Open the WAL and find the snapshot to start from; raise :class:`DataDirError` (files
    unchanged) where the data dir cannot be used or lost data."""
    watermark = Watermark(data_dir / WATERMARK_NAME)
    try:
        try:
            mark = watermark.read()
        except WatermarkError as err:
            raise DataDirError(
                f"data dir {data_dir}: {err}. It names the last WAL record known durable; "
                f"restore it from a backup of the data dir, or delete it to start without "
                "that check.") from err
        snap, broken = snaps.newest_valid()
        wal_dir = data_dir / "wal"
        if not (wal_dir.is_dir() and any(wal_dir.glob("*.wal"))) and mark is None:
            files = [p.name for _, _, p in snaps.entries()]
            if files:
                raise DataDirError(
                    f"data dir {data_dir} holds snapshots ({', '.join(files)}) but no WAL: "
                    f"the log and the member's identity are gone. {RESTORE}")
        try:
            wal, records = WAL.open(wal_dir, must_cover=mark.seq if mark else 0)
        except WALTruncatedError as err:
            assert mark is not None
            anyway = ""
            if err.last_seq:
                anyway = (f" To start anyway from what is left, accepting the loss, delete "
                          f"{watermark.path}.")
            raise DataDirError(
                f"data dir {data_dir} lost WAL records that were durable: {err.reason} "
                f"(recorded in {watermark.path} at {mark.at}). {RESTORE}{anyway}") from err
        except CorruptWALError as err:
            raise DataDirError(f"data dir {data_dir}: {err}. {RESTORE}") from err
        except DataDirError:
            raise
        except StorageError as err:
            raise DataDirError(f"data dir {data_dir}: {err}. {RESTORE}") from err
    except OSError as err:
        raise os_problem(data_dir, err) from err
    return Opened(snap, wal, records, watermark, broken)


def gap_error(data_dir: Path, opened: Opened, base: int, first: int) -> DataDirError:
    """The log's entries start at ``first`` but the snapshot to start from is at ``base``."""
    opened.wal.abandon()
    why = ""
    if opened.broken:
        why = " Newer snapshots failed their checks: " + "; ".join(
            f"{p.name}: {reason}" for p, reason in opened.broken) + "."
    at = f"at index {base}" if base else "(none usable)"
    return DataDirError(
        f"data dir {data_dir}: the WAL's entries start at index {first}, but the snapshot to "
        f"start from is {at}: entries {base + 1}..{first - 1} are in no file.{why} {RESTORE}")


def finish(opened: Opened, snaps: SnapshotStore) -> None:
    """After a successful recovery: set damaged snapshots aside (``.broken``, with a
    warning) and record the recovered log as durable (the WAL synced it when it opened)."""
    for path, reason in opened.broken:
        snaps.quarantine(path, reason)
    try:
        opened.watermark.mark(opened.wal.last_seq)
    except OSError as err:
        opened.wal.abandon()
        raise os_problem(opened.watermark.path.parent, err) from err


def writable_check(data_dir: Path) -> None:
    """Refuse a data dir that exists but cannot be written (a read-only mount, a user
    without permission) before anything else is tried in it."""
    if data_dir.exists() and not data_dir.is_dir():
        raise DataDirError(f"data dir {data_dir} is not a directory")
    if data_dir.is_dir() and not os.access(data_dir, os.W_OK | os.X_OK):
        if os.statvfs(data_dir).f_flag & os.ST_RDONLY:
            raise DataDirError(f"data dir {data_dir} is on a read-only file system")
        raise DataDirError(f"data dir {data_dir} is not writable by this user")
