"""A WAL's segment files: naming, listing, atomic creation, and reading them back at open
(the checks that tell a torn tail from damage are described in :mod:`coord.storage.wal`)."""

from __future__ import annotations

import contextlib
import mmap
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from coord.storage._fs import (
    FILE_MODE,
    SyncFn,
    fsync_dir,
    last_nonzero,
    preallocate,
    write_all,
)
from coord.storage.codec import (
    SEGMENT_HEADER_SIZE,
    Record,
    damage_of_last_frame,
    decode_frames,
    decode_segment_header,
    encode_segment_header,
    find_valid_frame,
)
from coord.storage.errors import CorruptWALError, StorageError, WALTruncatedError

log = structlog.get_logger("coord.storage.wal")

_SEGMENT_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")


def segment_name(index: int, first_seq: int) -> str:
    return f"{index:016x}-{first_seq:016x}.wal"


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """A segment file: its number, the sequence number of its first record, and its path."""

    index: int
    first_seq: int
    path: Path


def read_segments(path: Path, segments: list[SegmentInfo], must_cover: int, sync_fn: SyncFn,
                  ) -> tuple[list[Record], int, int, dict[int, int]]:
    """Read every record of ``segments`` (not empty), in order, repairing a torn tail of
    the last one; returns the records, the next sequence number, the end of the last
    segment's data and the data bytes of each earlier segment (by index)."""
    records: list[Record] = []
    next_seq: int | None = None
    end = 0
    sealed: dict[int, int] = {}
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if i > 0 and seg.index != segments[i - 1].index + 1:
            raise CorruptWALError(
                seg.path, 0, f"segment {segments[i - 1].index + 1} is missing before it"
            )
        if next_seq is not None and seg.first_seq != next_seq:
            raise CorruptWALError(
                seg.path,
                0,
                f"segment starts at sequence {seg.first_seq}, previous ended at {next_seq - 1}",
            )
        with mapped(seg.path) as (seg_fd, buf):
            header = decode_segment_header(buf)
            if isinstance(header, str):
                raise CorruptWALError(seg.path, 0, header)
            if header != (seg.index, seg.first_seq):
                raise CorruptWALError(
                    seg.path,
                    0,
                    f"header says segment {header[0]} first_seq {header[1]}, "
                    "file name disagrees",
                )
            result = decode_frames(buf, SEGMENT_HEADER_SIZE, seg.first_seq)
            records.extend(result.records)
            next_seq = result.next_seq
            end = result.end
            if not last:
                sealed[seg.index] = end
            junk = None
            if result.problem is not None:
                junk = last_nonzero(seg_fd, result.end, len(buf))
            if junk is None:
                continue  # the end of the data, or of it and its preallocated zeros
            if not last:
                raise CorruptWALError(
                    seg.path, result.end, f"{result.problem} in a non-last segment"
                )
            later = find_valid_frame(buf, result.end + 1, result.next_seq)
            if later is not None:
                raise CorruptWALError(
                    seg.path,
                    result.end,
                    f"{result.problem}, followed by a valid record (sequence {later[1]} "
                    f"at offset {later[0]}): damage in the middle of the log, not a torn "
                    "tail",
                )
            damage = damage_of_last_frame(buf, result.end, result.next_seq, junk)
            if damage is not None:
                raise CorruptWALError(
                    seg.path, result.end, f"{damage}: a damaged record, not a torn write"
                )
            if result.next_seq <= must_cover:
                # It looks torn, but it was durable: the file was cut short.
                raise WALTruncatedError(seg.path, result.next_seq - 1, must_cover)
        log.warning(
            "wal.torn_tail_repaired",
            path=str(seg.path),
            offset=result.end,
            dropped_bytes=junk + 1 - result.end,
            dropped_seq=result.next_seq,
            reason=result.problem,
            last_seq=result.next_seq - 1,
            note="one record that was never synced (a write cut short by a crash)",
        )
        fd = os.open(seg.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, result.end)
            sync_fn(fd)
        finally:
            os.close(fd)
    assert next_seq is not None
    return records, next_seq, end, sealed


def list_segments(path: Path) -> list[SegmentInfo]:
    segments: list[SegmentInfo] = []
    for entry in path.iterdir():
        m = _SEGMENT_RE.match(entry.name)
        if m:
            segments.append(SegmentInfo(int(m.group(1), 16), int(m.group(2), 16), entry))
        elif entry.name.endswith(".wal"):
            raise StorageError(f"unexpected file in WAL directory: {entry}")
    segments.sort(key=lambda s: s.index)
    return segments


def create_segment(
    path: Path, index: int, first_seq: int, body: bytes, sync_fn: SyncFn, size: int
) -> SegmentInfo:
    """Create a segment atomically, preallocated to ``size`` bytes: tmp file, fsync, rename,
    directory fsync."""
    final = path / segment_name(index, first_seq)
    if final.exists():
        raise StorageError(f"WAL segment {final} already exists")
    tmp = final.with_name(final.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        write_all(fd, encode_segment_header(index, first_seq) + body)
        preallocate(fd, size)
        sync_fn(fd)
    finally:
        os.close(fd)
    os.rename(tmp, final)
    fsync_dir(path)
    return SegmentInfo(index, first_seq, final)


def open_at(path: Path, offset: int) -> int:
    """Open a segment for writing at ``offset`` (its data's end; zeros may follow)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def mapped(path: Path) -> Iterator[tuple[int, bytes]]:
    """A segment's file descriptor and its bytes, memory-mapped read-only (a preallocated
    segment is mostly zeros, which need not be copied into the process)."""
    with path.open("rb") as f:
        fd = f.fileno()
        if os.fstat(fd).st_size == 0:
            yield fd, b""
            return
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        try:
            yield fd, mm  # type: ignore[misc]
        finally:
            # BufferError: a view of it is still referenced (by the traceback of an error
            # raised while decoding): keep that error; the mapping goes with the view.
            with contextlib.suppress(BufferError):
                mm.close()
