"""WAL: preallocated segments, and what it refuses to open — damage that is not a torn
tail (flipped bytes, zeroed records in an older segment, missing segments, bad headers,
stale frames) and a log that lost durable records (``must_cover``).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from coord.storage import (
    ENTRY,
    SNAPSHOT_MARKER,
    WAL,
    CorruptWALError,
    Record,
    _fs,
    codec,
)
from coord.storage.codec import FRAME_HEADER_SIZE, SEGMENT_HEADER_SIZE, decode_frames
from tests.helpers.fs import require_preallocation
from tests.storage.wal_support import (
    SMALL,
    entries,
    write_closed,
)


def reopen(path: Path, **kw: object) -> tuple[WAL, list[Record]]:
    return WAL.open(path, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- preallocation


def test_segments_are_preallocated_and_appends_do_not_grow_them(tmp_path: Path) -> None:
    """A new segment owns ``segment_size`` bytes at once (etcd does the same): appends and
    syncs write inside it, so the file's size — metadata an fdatasync would have to
    commit — does not change on the write path."""
    require_preallocation(tmp_path)
    wal, _ = WAL.open(tmp_path, segment_size=SMALL * 4)
    seg = wal.segments[-1].path
    assert seg.stat().st_size == SMALL * 4
    assert seg.stat().st_blocks * 512 >= SMALL * 4  # reserved blocks, not a sparse hole
    for i in range(10):
        wal.append(entries(2, start=2 * i))
        wal.sync()
        assert seg.stat().st_size == SMALL * 4
    assert wal.disk_bytes == SEGMENT_HEADER_SIZE + 20 * (FRAME_HEADER_SIZE + 40)
    wal.close()


def test_a_killed_writers_preallocated_segment_reopens(tmp_path: Path) -> None:
    """The image a kill -9 leaves (records synced, the rest of the preallocated segment zero,
    no clean close) reopens with every synced record and keeps appending after them."""
    require_preallocation(tmp_path)
    wal, _ = WAL.open(tmp_path / "live", segment_size=SMALL)
    wal.append(entries(3))
    wal.sync()
    seg = wal.segments[-1].path
    image = tmp_path / "image"
    image.mkdir()
    (image / seg.name).write_bytes(seg.read_bytes())  # a copy of the disk, mid-run
    wal.close()
    assert (image / seg.name).stat().st_size == SMALL
    wal, recs = WAL.open(image, segment_size=SMALL)
    assert recs == entries(3)
    wal.append(entries(2, start=3))
    wal.sync()
    wal.close()
    wal, recs = WAL.open(image, segment_size=SMALL)
    assert recs == entries(5)
    wal.close()


@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_junk_anywhere_in_the_preallocated_tail_is_found(tmp_path: Path, where: float) -> None:
    """The zero check skips the unwritten (hole) blocks without reading them, but not a
    byte written among them: junk right after the records, in the middle of the reserved
    space or in its last byte makes a torn tail (repaired, with a warning), not a clean
    end — and it is gone afterwards."""
    require_preallocation(tmp_path)
    size = 8 * 1024 * 1024
    wal, _ = WAL.open(tmp_path, segment_size=size)
    wal.append(entries(3))
    wal.sync()
    seg = wal.segments[-1].path
    end = SEGMENT_HEADER_SIZE + 3 * (FRAME_HEADER_SIZE + 40)
    at = min(size - 1, end + int((size - end) * where))
    with seg.open("r+b") as f:  # written by someone else while the WAL is open: a crash image
        f.seek(at)
        f.write(b"\x5a")
    os.close(wal._fd)  # abandon it as a killed writer would: no close, no truncation
    os.close(wal._lock_fd)
    with capture_logs() as logs:
        wal, recs = WAL.open(tmp_path, segment_size=size)
    assert recs == entries(3)
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["wal.torn_tail_repaired"]
    with seg.open("rb") as f:
        f.seek(at)
        assert f.read(1) == b"\0"
    wal.close()


def test_a_torn_frame_followed_by_zeros_is_repaired_at_every_offset(tmp_path: Path) -> None:
    """What a writer killed mid-append leaves in a preallocated segment: part of a frame,
    then zeros to the segment's end. The frame is dropped with a warning that counts the
    torn bytes (not the zeros), and appends continue where it began."""
    records = entries(4)
    seg = write_closed(tmp_path, records)
    full = seg.read_bytes()
    start = len(full) - (FRAME_HEADER_SIZE + 40)
    for cut in range(start + 1, len(full)):
        seg.write_bytes(full[:cut] + bytes(SMALL - cut))
        with capture_logs() as logs:
            wal, recs = WAL.open(tmp_path, segment_size=SMALL)
        assert recs == records[:-1], cut
        torn = [e for e in logs if e["log_level"] == "warning"]
        assert [e["event"] for e in torn] == ["wal.torn_tail_repaired"], cut
        assert torn[0]["dropped_bytes"] == len(full[start:cut].rstrip(b"\0")), cut
        wal.append(records[-1:])
        wal.close()
        assert seg.read_bytes() == full, cut


def test_seal_truncates_before_it_syncs(tmp_path: Path) -> None:
    """A clean close ends the segment at its last record and syncs that size."""
    sizes: list[int] = []

    def sync(fd: int) -> None:
        sizes.append(os.fstat(fd).st_size)
        os.fdatasync(fd)

    wal, _ = WAL.open(tmp_path, segment_size=SMALL, sync_fn=sync)
    wal.append(entries(3))
    sizes.clear()
    wal.close()
    assert sizes == [SEGMENT_HEADER_SIZE + 3 * (FRAME_HEADER_SIZE + 40)]


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EOPNOTSUPP, None])
def test_a_segment_that_cannot_be_preallocated_still_works(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int | None) -> None:
    """A full disk (ENOSPC, with a warning), a file system without fallocate (EOPNOTSUPP,
    quietly) or a platform without it (None): the segment grows as it is written, and the
    WAL opens, cuts, closes and reopens as usual — a restart on a nearly full disk works."""
    def refuse(fd: int, mode: int, offset: int, length: int) -> int:
        raise OSError(err, os.strerror(err or 0))

    monkeypatch.setattr(_fs, "_fallocate", None if err is None else refuse)
    with capture_logs() as logs:
        wal, _ = WAL.open(tmp_path, segment_size=SMALL)
        wal.append(entries(3))
        wal.sync()
        assert wal.segments[-1].path.stat().st_size == wal.disk_bytes < SMALL
        wal.cut()
        wal.append(entries(2, start=3))
        wal.close()
        wal, recs = WAL.open(tmp_path, segment_size=SMALL)
    assert [r for r in recs if r.type == ENTRY] == entries(5)
    wal.close()
    warned = [e for e in logs if e["event"] == "storage.preallocate_failed"]
    assert bool(warned) == (err == errno.ENOSPC)


def test_an_error_while_reading_a_segment_is_not_masked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error raised while a mapped segment is decoded (here MemoryError copying a
    record) reaches the caller as itself, not as a BufferError from unmapping the file."""
    write_closed(tmp_path, entries(5))
    made = 0

    def record(rtype: int, data: bytes) -> Record:
        nonlocal made
        made += 1
        if made == 3:
            raise MemoryError("no room for the third record")
        return Record(rtype, data)

    monkeypatch.setattr(codec, "Record", record)
    with pytest.raises(MemoryError, match="third record"):
        WAL.open(tmp_path)


def test_disk_bytes_follow_appends_cuts_and_releases(tmp_path: Path) -> None:
    """``disk_bytes`` (Status's dbSize) is the bytes of records handed to the files: it
    moves on writes, cuts and releases, and never counts the preallocated space. It is one
    int, so a reader on another thread sees either the value before a change or after."""
    wal, _ = WAL.open(tmp_path, segment_size=SMALL)

    def on_disk() -> int:  # what the files hold, up to each one's last record
        return sum(decode_frames(s.path.read_bytes(), SEGMENT_HEADER_SIZE, s.first_seq).end
                   for s in wal.segments)

    assert wal.disk_bytes == on_disk() == SEGMENT_HEADER_SIZE
    wal.append(entries(2))
    assert wal.disk_bytes == SEGMENT_HEADER_SIZE  # buffered, not yet written
    for i in range(200):
        wal.append(entries(2, start=2 * i))
        wal.sync()  # cuts every ~40 records
        assert wal.disk_bytes == on_disk(), i
    assert len(wal.segments) > 5
    marker = wal.append([Record(SNAPSHOT_MARKER, b"snap")])
    wal.sync()
    assert wal.release_before(marker)
    assert wal.disk_bytes == on_disk()
    wal.close()


def test_cut_and_close_end_a_segment_at_its_last_record(tmp_path: Path) -> None:
    """Only the open segment carries preallocated zeros: a cut truncates the old segment to
    its records and a clean close the current one."""
    require_preallocation(tmp_path)
    wal, _ = WAL.open(tmp_path, segment_size=SMALL)
    wal.append(entries(3))
    wal.sync()
    old = wal.segments[-1].path
    wal.cut()
    assert old.stat().st_size == SEGMENT_HEADER_SIZE + 3 * (FRAME_HEADER_SIZE + 40)
    current = wal.segments[-1].path
    assert current.stat().st_size == SMALL
    wal.append(entries(1, start=3))
    wal.close()
    assert current.stat().st_size < SMALL
    wal, recs = WAL.open(tmp_path, segment_size=SMALL)
    assert [r for r in recs if r.type == ENTRY] == entries(4)
    assert current.stat().st_size == SMALL  # reopened: preallocated again
    wal.close()


def test_zeroed_records_at_the_end_of_an_older_segment_are_refused(tmp_path: Path) -> None:
    """Zeros end the log only where nothing follows: zeroed records at the end of a segment
    that has a successor leave a gap in the sequence numbers, which is corruption."""
    wal, _ = WAL.open(tmp_path, segment_size=SMALL)
    wal.append(entries(3))
    wal.sync()
    wal.cut()
    wal.append(entries(2, start=3))
    segs = wal.segments
    wal.close()
    first = segs[0].path
    blob = first.read_bytes()
    last_record = FRAME_HEADER_SIZE + 40
    first.write_bytes(blob[:-last_record] + bytes(last_record))
    with pytest.raises(CorruptWALError, match="previous ended at"):
        WAL.open(tmp_path, segment_size=SMALL)


def test_flipped_byte_in_the_last_record_is_refused(tmp_path: Path) -> None:
    """A complete last record whose checksum fails is damage, not a torn write (#15 item 8;
    etcd stops with ``walpb: crc mismatch``): a flipped bit anywhere in it — header or
    payload — refuses the open, names the record, and changes nothing. Before, a flip in the
    payload dropped the record as a torn tail."""
    records = entries(4)
    seg = write_closed(tmp_path, records)
    full = seg.read_bytes()
    start = len(full) - (FRAME_HEADER_SIZE + 40)
    for i in range(start, len(full)):
        blob = bytearray(full)
        blob[i] ^= 0x40
        # as a killed member leaves it too: the preallocated zeros after the record
        seg.write_bytes(bytes(blob) + bytes(SMALL - len(blob)))
        with pytest.raises(CorruptWALError) as info:
            WAL.open(tmp_path, segment_size=SMALL)
        assert info.value.offset == start and "not a torn write" in str(info.value), i
        assert seg.read_bytes()[: len(blob)] == bytes(blob), i
    seg.write_bytes(full)
    wal, recs = WAL.open(tmp_path)
    assert recs == records
    wal.close()


def test_a_record_with_an_unwritten_sector_is_a_torn_write(tmp_path: Path) -> None:
    """A crash (power loss) can persist the sectors of one write in any order: a last record
    with a whole sector of zeros that should hold data is torn (etcd's rule), dropped with a
    warning that names the record."""
    records = [*entries(2), Record(ENTRY, b"\x01" * 2000)]
    seg = write_closed(tmp_path, records)
    blob = bytearray(seg.read_bytes())
    blob[1024:1536] = bytes(512)  # a sector in the middle of the last record
    seg.write_bytes(bytes(blob))
    with capture_logs() as logs:
        wal, recs = WAL.open(tmp_path, segment_size=SMALL)
    assert recs == records[:2]
    torn = [e for e in logs if e["event"] == "wal.torn_tail_repaired"]
    assert len(torn) == 1 and torn[0]["dropped_seq"] == 3
    wal.close()


def test_must_cover_refuses_a_log_that_lost_durable_records(tmp_path: Path) -> None:
    """A log cut short at a record boundary, cut inside a durable record, or emptied is
    refused when the caller knows its records up to ``must_cover`` were durable — and the
    files are left as they are. A torn record after ``must_cover`` is still repaired."""
    records = entries(6)
    seg = write_closed(tmp_path, records)
    full = seg.read_bytes()
    frame = FRAME_HEADER_SIZE + 40
    half = SEGMENT_HEADER_SIZE + 3 * frame
    for cut in (half, half + 10):
        seg.write_bytes(full[:cut])
        with pytest.raises(CorruptWALError, match="durable"):
            WAL.open(tmp_path, must_cover=6)
        assert seg.read_bytes() == full[:cut]
    seg.write_bytes(full[:-10])  # the last record torn: only 5 were durable
    wal, recs = WAL.open(tmp_path, must_cover=5)
    assert recs == records[:5]
    wal.close()
    seg.unlink()
    with pytest.raises(CorruptWALError, match="holds no records"):
        WAL.open(tmp_path, must_cover=5)
    assert not list(tmp_path.glob("*.wal")), "a refused open must not create a segment"


def test_a_deleted_last_segment_is_refused_with_must_cover(tmp_path: Path) -> None:
    """Without the newest segment the older ones end cleanly; only the watermark shows
    that records are missing."""
    wal, _ = WAL.open(tmp_path, segment_size=SMALL)
    wal.append(entries(3))
    wal.cut()
    wal.append(entries(3, start=3))
    last = wal.segments[-1].path
    wal.close()
    _, recs = reopen(tmp_path)
    assert len(recs) == 6
    _.close()
    last.unlink()
    with pytest.raises(CorruptWALError, match="missing"):
        WAL.open(tmp_path, must_cover=6)


# ---------------------------------------------------------------- corruption


def test_flipped_byte_in_middle_record_is_refused(tmp_path: Path) -> None:
    """Flipping any byte of a record that has valid records after it raises CorruptWALError
    naming the segment file and the damaged record's offset, and leaves the file unchanged."""
    records = entries(5, size=30)
    seg = write_closed(tmp_path, records)
    full = seg.read_bytes()
    rec_size = FRAME_HEADER_SIZE + 30
    victim = 2
    start = SEGMENT_HEADER_SIZE + victim * rec_size
    for i in range(start, start + rec_size):
        blob = bytearray(full)
        blob[i] ^= 0x01
        seg.write_bytes(bytes(blob))
        with pytest.raises(CorruptWALError) as info:
            WAL.open(tmp_path)
        msg = str(info.value)
        assert seg.name in msg and f"offset {start}" in msg, (i, msg)
        assert info.value.offset == start and info.value.path == seg
        assert seg.read_bytes() == bytes(blob)  # nothing repaired or truncated
    seg.write_bytes(full)
    wal, recs = WAL.open(tmp_path)  # the lock was released after every refusal
    assert recs == records
    wal.close()


def test_damage_in_non_last_segment_is_refused(tmp_path: Path) -> None:
    """Even a 'torn-looking' end of an older segment is corruption: it was synced on cut."""
    wal, _ = WAL.open(tmp_path, segment_size=64)
    for i in range(3):
        wal.append(entries(3, start=3 * i))
        wal.sync()  # cuts after every sync: segment_size is tiny
    segs = wal.segments
    wal.close()
    first = segs[0].path
    first.write_bytes(first.read_bytes()[:-5])
    with pytest.raises(CorruptWALError, match=first.name):
        WAL.open(tmp_path)


def test_missing_middle_segment_is_refused(tmp_path: Path) -> None:
    """A gap in segment numbers is reported, not skipped."""
    wal, _ = WAL.open(tmp_path, segment_size=64)
    for i in range(3):
        wal.append(entries(2, start=2 * i))
        wal.sync()
    segs = wal.segments
    wal.close()
    segs[1].path.unlink()
    with pytest.raises(CorruptWALError, match="missing"):
        WAL.open(tmp_path)


def test_bad_segment_header_is_refused(tmp_path: Path) -> None:
    """A damaged segment header is corruption at offset 0."""
    seg = write_closed(tmp_path, entries(2))
    blob = bytearray(seg.read_bytes())
    blob[20] ^= 0xFF
    seg.write_bytes(bytes(blob))
    with pytest.raises(CorruptWALError, match="offset 0"):
        WAL.open(tmp_path)


def test_stale_frame_with_wrong_sequence_is_not_accepted(tmp_path: Path) -> None:
    """A byte-identical copy of an earlier frame appended at the end is not taken as a new
    record: its sequence number is wrong, so it is treated as a torn tail and dropped."""
    records = entries(3, size=20)
    seg = write_closed(tmp_path, records)
    blob = seg.read_bytes()
    first_frame = blob[SEGMENT_HEADER_SIZE : SEGMENT_HEADER_SIZE + FRAME_HEADER_SIZE + 20]
    seg.write_bytes(blob + first_frame)
    wal, recs = WAL.open(tmp_path)
    assert recs == records
    wal.close()


def test_leftover_tmp_segment_is_removed(tmp_path: Path) -> None:
    """A half-created segment (crash during cut) is deleted on open."""
    write_closed(tmp_path, entries(2))
    tmp = tmp_path / "0000000000000001-0000000000000003.wal.tmp"
    tmp.write_bytes(b"partial")
    wal, recs = WAL.open(tmp_path)
    assert recs == entries(2) and not tmp.exists()
    wal.close()
