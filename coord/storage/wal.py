"""A segmented, CRC-checked, fsync'd write-ahead log of opaque records.

Directory layout::

    <dir>/LOCK                                   flock'd while a WAL is open (one writer)
    <dir>/<index:016x>-<first_seq:016x>.wal      segments, contiguous indices and sequences
    <dir>/*.wal.tmp                              a segment being created (removed on open)

See :mod:`coord.storage.codec` for the byte format. Every record gets a sequence number
(1, 2, 3, ... never reused) that is stored in its frame and checked on read.

Invariants:

* Records are returned by :meth:`WAL.open` in append order, with no gaps: the i-th record has
  sequence number ``wal.first_seq + i``.
* When :meth:`WAL.sync` returns, every record appended before the call is durable (fdatasync
  of the segment; segment creations and removals are covered by a directory fsync).
* Segments are preallocated to ``segment_size`` when created (as etcd does): an append then
  writes into blocks the file already owns, and ``fdatasync`` has no file size to commit —
  cheaper per sync. A segment's records are followed by zeros up to its preallocated end;
  zeros where the next record would start are the end of the log, not damage. :meth:`cut`
  and :meth:`close` truncate the segment to its last record.
* Only the last segment can end in a torn write: :meth:`cut` syncs a segment before starting
  the next one. So damage anywhere else, or damage followed by valid data, is corruption and
  :meth:`WAL.open` refuses it with :class:`CorruptWALError` instead of dropping records that
  may have been acknowledged. A torn tail (the end of the last segment after a crash during an
  unsynced write) is truncated away; those records were never reported durable. Torn means
  the last frame's bytes end early (see ``codec.damage_of_last_frame``): a complete last
  record with a bad checksum is corruption too, and so is a torn-looking one at or below
  the caller's ``must_cover`` (a record it knows was durable).
* After a failed write or fsync the WAL is poisoned (:class:`WALFailedError`) — a retry of
  fsync can falsely succeed on Linux — and must be closed and reopened.
* Not thread-safe: use one WAL from one thread at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from coord.storage._fs import (
    FILE_MODE,
    SyncFn,
    default_sync,
    ensure_dir,
    fsync_dir,
    last_nonzero,
    preallocate,
    write_all,
)
from coord.storage.codec import (
    HARD_STATE,
    METADATA,
    SEGMENT_HEADER_SIZE,
    SNAPSHOT_MARKER,
    Record,
    damage_of_last_frame,
    decode_frames,
    decode_segment_header,
    encode_frame,
    encode_segment_header,
    find_valid_frame,
)
from coord.storage.errors import (
    CorruptWALError,
    StorageError,
    WALClosedError,
    WALFailedError,
    WALLockedError,
    WALTruncatedError,
)

__all__ = ["DEFAULT_CARRY_OVER", "DEFAULT_SEGMENT_SIZE", "WAL", "SegmentInfo"]

log = structlog.get_logger(__name__)

DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024
DEFAULT_CARRY_OVER: frozenset[int] = frozenset({HARD_STATE, SNAPSHOT_MARKER, METADATA})
"""Record types whose latest instance is copied to the start of every new segment."""

_FLUSH_THRESHOLD = 1024 * 1024
_SEGMENT_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")
_LOCK_NAME = "LOCK"


def _segment_name(index: int, first_seq: int) -> str:
    return f"{index:016x}-{first_seq:016x}.wal"


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """A segment file: its number, the sequence number of its first record, and its path."""

    index: int
    first_seq: int
    path: Path


class WAL:
    """An open write-ahead log. Create with :meth:`WAL.open`.

    ``append`` only buffers (it may hand bytes to the OS, never fsyncs); ``sync`` makes all
    appended records durable; the caller decides when to sync.
    """

    def __init__(
        self,
        *,
        directory: Path,
        lock_fd: int,
        segments: list[SegmentInfo],
        fd: int,
        segment_bytes: int,
        last_seq: int,
        latest: dict[int, Record],
        segment_size: int,
        sync_fn: SyncFn,
        carry_over: frozenset[int],
        sealed_bytes: dict[int, int],
    ) -> None:
        """Internal: use :meth:`WAL.open`."""
        self._dir = directory
        self._lock_fd = lock_fd
        self._segments = segments
        self._fd = fd
        self._segment_bytes = segment_bytes  # size of the current segment incl. buffer
        self._buf = bytearray()
        self._last_seq = last_seq
        self._durable_seq = last_seq
        self._latest = latest
        self._segment_size = segment_size
        self._sync_fn = sync_fn
        self._carry_over = carry_over
        self._closed = False
        self._failed: BaseException | None = None
        # Bytes of records in each segment before the current one (by index), and in all of
        # them plus what the current one was handed: one int, so that a reader on another
        # thread (Status's dbSize) sees one consistent value.
        self._sealed_bytes = sealed_bytes
        self._disk_bytes = sum(sealed_bytes.values()) + segment_bytes

    # ------------------------------------------------------------------ open / recovery

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        sync_fn: SyncFn | None = None,
        carry_over: Iterable[int] = DEFAULT_CARRY_OVER,
        must_cover: int = 0,
    ) -> tuple[WAL, list[Record]]:
        """Open (creating if needed) the WAL in ``directory`` and read every record in it.

        Returns the WAL, positioned to append after the last valid record, and all records
        from the oldest retained segment on, in order. Every returned record is durable when
        this returns (the last segment is fsync'd: its tail may have been in the page cache
        only, written by a process killed before its fsync). A torn tail of the last segment is
        truncated (and the truncation fsync'd) with a warning; any other damage raises
        :class:`CorruptWALError` without changing the files. Raises :class:`WALLockedError`
        if the directory is already open. ``sync_fn(fd)`` replaces ``fdatasync`` (tests).

        ``must_cover``: a sequence number the caller knows was durable (a watermark kept
        outside the WAL). A log that now ends before it lost records that were written —
        a segment deleted, a file cut short — and is refused with :class:`WALTruncatedError`
        (an empty or missing directory too: nothing is created then); a damaged record at
        or below it is never a torn write. No file is changed when either is raised.
        """
        if segment_size < SEGMENT_HEADER_SIZE:
            raise ValueError(f"segment_size must be at least {SEGMENT_HEADER_SIZE}")
        path = Path(directory)
        if must_cover and not path.is_dir():
            raise WALTruncatedError(path, 0, must_cover)  # and create nothing
        ensure_dir(path)
        lock_fd = os.open(path / _LOCK_NAME, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise WALLockedError(f"WAL directory {path} is already open") from None
        try:
            return cls._recover(
                path,
                lock_fd,
                segment_size=segment_size,
                sync_fn=sync_fn or default_sync,
                carry_over=frozenset(carry_over),
                must_cover=must_cover,
            )
        except BaseException:
            os.close(lock_fd)
            raise

    @classmethod
    def _recover(
        cls,
        path: Path,
        lock_fd: int,
        *,
        segment_size: int,
        sync_fn: SyncFn,
        carry_over: frozenset[int],
        must_cover: int,
    ) -> tuple[WAL, list[Record]]:
        removed_tmp = False
        for tmp in sorted(path.glob("*.wal.tmp")):
            log.warning("wal.tmp_segment_removed", path=str(tmp))
            tmp.unlink()
            removed_tmp = True
        if removed_tmp:
            fsync_dir(path)

        segments = _list_segments(path)
        if not segments and must_cover:
            raise WALTruncatedError(path, 0, must_cover)
        if not segments:
            seg = _create_segment(path, 0, 1, b"", sync_fn, segment_size)
            fd = _open_at(seg.path, SEGMENT_HEADER_SIZE)
            wal = cls(
                directory=path,
                lock_fd=lock_fd,
                segments=[seg],
                fd=fd,
                segment_bytes=SEGMENT_HEADER_SIZE,
                last_seq=0,
                latest={},
                segment_size=segment_size,
                sync_fn=sync_fn,
                carry_over=carry_over,
                sealed_bytes={},
            )
            log.info("wal.created", dir=str(path))
            return wal, []

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
            with _mapped(seg.path) as (seg_fd, buf):
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
        if next_seq - 1 < must_cover:
            raise WALTruncatedError(path, next_seq - 1, must_cover)
        latest: dict[int, Record] = {}
        for rec in records:
            if rec.type in carry_over:
                latest.pop(rec.type, None)
                latest[rec.type] = rec
        fd = _open_at(segments[-1].path, end)
        # What we just read may have come from the page cache only: the previous process can
        # have been killed after write() and before its fsync. Sync it now, so that everything
        # returned by open() really is durable before anyone acts on it (e.g. acks it). The
        # same sync covers the preallocation of a segment a clean close had truncated.
        try:
            preallocate(fd, segment_size)
            sync_fn(fd)
        except BaseException:
            os.close(fd)
            raise
        wal = cls(
            directory=path,
            lock_fd=lock_fd,
            segments=segments,
            fd=fd,
            segment_bytes=end,
            last_seq=next_seq - 1,
            latest=latest,
            segment_size=segment_size,
            sync_fn=sync_fn,
            carry_over=carry_over,
            sealed_bytes=sealed,
        )
        log.info(
            "wal.opened",
            dir=str(path),
            segments=len(segments),
            records=len(records),
            first_seq=segments[0].first_seq,
            last_seq=next_seq - 1,
        )
        return wal, records

    # ------------------------------------------------------------------ properties

    @property
    def directory(self) -> Path:
        """The WAL's directory."""
        return self._dir

    @property
    def first_seq(self) -> int:
        """Sequence number of the first record still on disk (the oldest segment's first)."""
        return self._segments[0].first_seq

    @property
    def last_seq(self) -> int:
        """Sequence number of the last appended record (0 if none ever)."""
        return self._last_seq

    @property
    def durable_seq(self) -> int:
        """Every record with a sequence number up to this one is known to be durable."""
        return self._durable_seq

    @property
    def segments(self) -> list[SegmentInfo]:
        """The segment files, oldest first (a copy)."""
        return list(self._segments)

    # ------------------------------------------------------------------ writing

    def _check_usable(self) -> None:
        if self._closed:
            raise WALClosedError(f"WAL {self._dir} is closed")
        if self._failed is not None:
            raise WALFailedError(
                f"WAL {self._dir} failed earlier ({self._failed!r}); close and reopen it"
            ) from self._failed

    def append(self, records: Iterable[Record]) -> int:
        """Buffer ``records`` for writing; return the sequence number of the last one.

        Nothing is durable until :meth:`sync` returns. Records appended are numbered
        ``last_seq + 1, last_seq + 2, ...``. Returns ``last_seq`` unchanged for no records.
        """
        self._check_usable()
        buf = self._buf
        before = len(buf)
        seq = self._last_seq
        carry = self._carry_over
        for rec in records:
            seq += 1
            encode_frame(buf, seq, rec)
            if rec.type in carry:
                self._latest.pop(rec.type, None)  # keep the dict in last-append order
                self._latest[rec.type] = rec
        self._segment_bytes += len(buf) - before
        self._last_seq = seq
        if len(buf) >= _FLUSH_THRESHOLD:
            self._flush()
        return seq

    def _flush(self) -> None:
        """Hand the buffer to the OS (no fsync)."""
        if not self._buf:
            return
        try:
            write_all(self._fd, self._buf)
        except OSError as exc:
            self._failed = exc
            raise WALFailedError(f"write to WAL {self._dir} failed: {exc}") from exc
        self._disk_bytes += len(self._buf)
        self._buf.clear()

    def sync(self) -> int:
        """Write and fdatasync everything appended; return :attr:`durable_seq`.

        When this returns, every record appended before the call is durable. Does nothing
        (no fsync) when nothing was appended since the last sync. If the current segment has
        reached ``segment_size`` afterwards, cuts to a new segment.
        """
        self.sync_no_cut()
        if self._segment_bytes >= self._segment_size:
            self.cut()
        return self._durable_seq

    def cut(self) -> SegmentInfo:
        """Sync the current segment and start a new one; return the new segment.

        The new segment starts with a copy of the latest record of each ``carry_over`` type
        (in their original order), so that releasing older segments never loses the current
        hard state, snapshot marker or metadata. The new segment is created as a temporary
        file, fsync'd, renamed into place and the directory fsync'd: when this returns, it
        and its carried-over records are durable.
        """
        self._seal()
        current = self._segments[-1]
        carried = bytearray()
        seq = self._last_seq
        for rec in self._latest.values():  # dict order = order of their last append
            seq += 1
            encode_frame(carried, seq, rec)
        try:
            seg = _create_segment(
                self._dir,
                current.index + 1,
                self._last_seq + 1,
                bytes(carried),
                self._sync_fn,
                self._segment_size,
            )
            new_fd = _open_at(seg.path, SEGMENT_HEADER_SIZE + len(carried))
        except OSError as exc:
            self._failed = exc
            raise WALFailedError(f"creating a WAL segment in {self._dir} failed: {exc}") from exc
        os.close(self._fd)
        self._fd = new_fd
        self._sealed_bytes[current.index] = self._segment_bytes
        self._segments.append(seg)
        self._segment_bytes = SEGMENT_HEADER_SIZE + len(carried)
        self._disk_bytes += self._segment_bytes
        self._last_seq = seq
        self._durable_seq = seq
        log.info(
            "wal.segment_cut",
            path=str(seg.path),
            first_seq=seg.first_seq,
            carried=len(self._latest),
        )
        return seg

    def sync_no_cut(self) -> int:
        """Like :meth:`sync` but never cuts a new segment."""
        self._check_usable()
        if self._durable_seq != self._last_seq or self._buf:
            self._flush()
            try:
                self._sync_fn(self._fd)
            except OSError as exc:
                self._failed = exc
                raise WALFailedError(f"fsync of WAL {self._dir} failed: {exc}") from exc
            self._durable_seq = self._last_seq
        return self._durable_seq

    def _seal(self) -> None:
        """Make the current segment durable and end it at its last record: its preallocated
        tail is cut off, in the same sync (a segment that is not the last, or the last one
        after a clean close, has no zeros after its records)."""
        self._check_usable()
        self._flush()
        try:
            trim = os.fstat(self._fd).st_size != self._segment_bytes
            if trim:
                os.ftruncate(self._fd, self._segment_bytes)
            if trim or self._durable_seq != self._last_seq:
                self._sync_fn(self._fd)
        except OSError as exc:
            self._failed = exc
            raise WALFailedError(f"sealing WAL segment in {self._dir} failed: {exc}") from exc
        self._durable_seq = self._last_seq

    @property
    def disk_bytes(self) -> int:
        """Bytes of records on disk: every segment, the current one up to its last record
        (not its preallocated tail)."""
        return self._disk_bytes

    def release_before(self, seq: int) -> list[Path]:
        """Delete every segment all of whose records have sequence numbers below ``seq``.

        Call it with the sequence number of the ``SNAPSHOT_MARKER`` record appended after a
        snapshot was durably saved: everything before it is covered by the snapshot. The
        current (last) segment is never deleted, and the segment holding ``seq`` is kept.
        Syncs first if ``seq`` is not yet durable. When this returns, the removals are durable
        (directory fsync). Returns the deleted paths.
        """
        self._check_usable()
        if seq > self._durable_seq:
            self.sync_no_cut()
        doomed: list[SegmentInfo] = []
        for cur, nxt in zip(self._segments, self._segments[1:], strict=False):
            if nxt.first_seq <= seq:
                doomed.append(cur)
            else:
                break
        if not doomed:
            return []
        for seg in doomed:
            seg.path.unlink()
        fsync_dir(self._dir)
        del self._segments[: len(doomed)]
        self._disk_bytes -= sum(self._sealed_bytes.pop(seg.index, 0) for seg in doomed)
        log.info(
            "wal.segments_released",
            count=len(doomed),
            before_seq=seq,
            first_seq=self._segments[0].first_seq,
        )
        return [s.path for s in doomed]

    def close(self) -> None:
        """Sync (unless failed) and close. Idempotent. Releases the directory lock."""
        if self._closed:
            return
        try:
            if self._failed is None:
                self._seal()
        finally:
            self._closed = True
            with contextlib.suppress(OSError):
                os.close(self._fd)
            os.close(self._lock_fd)

    def abandon(self) -> None:
        """Close without syncing or trimming anything (a recovery that was refused after the
        WAL opened: its files stay exactly as they are). Releases the directory lock."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            os.close(self._fd)
        os.close(self._lock_fd)

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _list_segments(path: Path) -> list[SegmentInfo]:
    segments: list[SegmentInfo] = []
    for entry in path.iterdir():
        m = _SEGMENT_RE.match(entry.name)
        if m:
            segments.append(SegmentInfo(int(m.group(1), 16), int(m.group(2), 16), entry))
        elif entry.name.endswith(".wal"):
            raise StorageError(f"unexpected file in WAL directory: {entry}")
    segments.sort(key=lambda s: s.index)
    return segments


def _create_segment(
    path: Path, index: int, first_seq: int, body: bytes, sync_fn: SyncFn, size: int
) -> SegmentInfo:
    """Create a segment atomically, preallocated to ``size`` bytes: tmp file, fsync, rename,
    directory fsync."""
    final = path / _segment_name(index, first_seq)
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


def _open_at(path: Path, offset: int) -> int:
    """Open a segment for writing at ``offset`` (its data's end; zeros may follow)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def _mapped(path: Path) -> Iterator[tuple[int, bytes]]:
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
