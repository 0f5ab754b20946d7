"""WAL: round-trips, torn-tail repair, segments, locking, failure.

Preallocated segments and refusing damage (corruption, lost records) are in
test_wal_damage.py; the records and reopening both use are in wal_support.py.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from coord.storage import (
    ENTRY,
    HARD_STATE,
    METADATA,
    SNAPSHOT_MARKER,
    WAL,
    Record,
    StorageError,
    WALClosedError,
    WALFailedError,
    WALLockedError,
)
from coord.storage.codec import FRAME_HEADER_SIZE, SEGMENT_HEADER_SIZE, decode_frames
from tests.helpers.fs import require_preallocation
from tests.storage.wal_support import (
    SMALL,
    entries,
    write_closed,
)


def test_empty_wal_roundtrip(tmp_path: Path) -> None:
    """A new directory opens as an empty WAL and reopens as one."""
    wal, recs = WAL.open(tmp_path / "w")
    assert recs == [] and wal.last_seq == 0 and wal.first_seq == 1
    wal.close()
    wal, recs = WAL.open(tmp_path / "w")
    assert recs == []
    wal.close()


def test_roundtrip_many_batches_and_types(tmp_path: Path) -> None:
    """Records of all types and sizes come back identical and in order across reopens."""
    expected: list[Record] = []
    for round_ in range(3):
        wal, recs = WAL.open(tmp_path)
        assert recs == expected
        assert wal.last_seq == len(expected)
        batch = [
            Record(ENTRY, b""),
            Record(HARD_STATE, bytes(range(256)) * 3),
            Record(SNAPSHOT_MARKER, b"snap%d" % round_),
            Record(METADATA, os.urandom(70_000)),
            Record(200, b"custom type"),
        ]
        assert wal.append(batch) == len(expected) + len(batch)
        assert wal.durable_seq == len(expected)
        assert wal.sync() == len(expected) + len(batch)
        expected += batch
        wal.close()
    wal, recs = WAL.open(tmp_path)
    assert recs == expected
    wal.close()


def test_append_returns_sequence_numbers(tmp_path: Path) -> None:
    """append numbers records consecutively and an empty append changes nothing."""
    wal, _ = WAL.open(tmp_path)
    assert wal.append(entries(3)) == 3
    assert wal.append([]) == 3
    assert wal.append(entries(2)) == 5
    wal.close()


def test_unsynced_records_are_not_durable_but_close_syncs(tmp_path: Path) -> None:
    """close() syncs what was appended; sync() is skipped when nothing is new."""
    calls: list[int] = []

    def counting_sync(fd: int) -> None:
        calls.append(fd)
        os.fdatasync(fd)

    wal, _ = WAL.open(tmp_path, sync_fn=counting_sync)
    calls.clear()  # creating the first segment synced it
    wal.sync()
    assert calls == []
    wal.append(entries(2))
    wal.close()
    assert len(calls) == 1
    _, recs = WAL.open(tmp_path)
    assert recs == entries(2)


def test_large_append_is_handed_to_os_before_sync(tmp_path: Path) -> None:
    """Appends beyond the flush threshold are written in pieces and still read back whole."""
    wal, _ = WAL.open(tmp_path)
    big = [Record(ENTRY, os.urandom(300_000)) for _ in range(8)]
    for rec in big:
        wal.append([rec])
    wal.sync()
    wal.close()
    wal, recs = WAL.open(tmp_path)
    assert recs == big
    wal.close()


def test_record_validation() -> None:
    """Record types outside 1..255 are refused."""
    with pytest.raises(ValueError):
        Record(0, b"")
    with pytest.raises(ValueError):
        Record(256, b"")


# ---------------------------------------------------------------- torn tails


def test_torn_tail_at_every_offset_of_last_record_is_repaired(tmp_path: Path) -> None:
    """Cutting the file anywhere inside the last record drops just that record, with a
    warning, and the repaired WAL accepts and keeps new appends."""
    require_preallocation(tmp_path)
    records = entries(5, size=60)
    seg = write_closed(tmp_path, records)
    full = seg.read_bytes()
    last_len = FRAME_HEADER_SIZE + len(records[-1].data)
    start = len(full) - last_len
    for cut in range(start, len(full)):
        seg.write_bytes(full[:cut])
        with capture_logs() as logs:
            wal, recs = WAL.open(tmp_path, segment_size=SMALL)
        assert recs == records[:-1], cut
        # the torn bytes are gone: zeros (the preallocated space) follow the last record
        assert seg.read_bytes() == full[:start] + bytes(SMALL - start), cut
        torn = [e for e in logs if e["event"] == "wal.torn_tail_repaired"]
        if cut > start:
            assert (
                len(torn) == 1 and torn[0]["offset"] == start and torn[0]["log_level"] == "warning"
            )
        else:
            assert torn == []
        wal.append([Record(ENTRY, b"after repair")])
        wal.close()
        wal, recs = WAL.open(tmp_path, segment_size=SMALL)
        assert recs == [*records[:-1], Record(ENTRY, b"after repair")], cut
        wal.close()


@pytest.mark.parametrize("fill", [b"\xff", b"\xc5"])
def test_garbage_tail_is_repaired(tmp_path: Path, fill: bytes) -> None:
    """Garbage after the last record is cut off, with a warning."""
    require_preallocation(tmp_path)
    records = entries(4)
    seg = write_closed(tmp_path, records)
    good = seg.read_bytes()
    seg.write_bytes(good + fill * 5000)
    with capture_logs() as logs:
        wal, recs = WAL.open(tmp_path, segment_size=SMALL)
    assert recs == records
    assert seg.read_bytes() == good + bytes(SMALL - len(good))
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["wal.torn_tail_repaired"]
    wal.close()
    assert seg.read_bytes() == good


def test_zero_tail_is_the_end_of_the_log(tmp_path: Path) -> None:
    """Zeros after the last record — a preallocated segment whose writer was killed — end
    the log quietly: no warning, nothing rewritten, and appends continue after the record."""
    records = entries(4)
    seg = write_closed(tmp_path, records)
    good = seg.read_bytes()
    seg.write_bytes(good + bytes(5000))
    with capture_logs() as logs:
        wal, recs = WAL.open(tmp_path, segment_size=SMALL)
    assert recs == records
    assert not [e for e in logs if e["log_level"] == "warning"]
    assert seg.read_bytes() == good + bytes(5000)  # nothing rewritten
    wal.append(entries(1, start=4))
    wal.close()
    wal, recs = WAL.open(tmp_path)
    assert recs == entries(5)
    wal.close()


# ---------------------------------------------------------------- segments


def test_cut_and_reopen_across_segments(tmp_path: Path) -> None:
    """Records spanning many segments read back in order; each segment starts where the
    previous one ended."""
    wal, _ = WAL.open(tmp_path, segment_size=1024)
    all_recs: list[Record] = []
    for i in range(40):
        batch = entries(3, start=3 * i, size=100)
        wal.append(batch)
        wal.sync()
        all_recs += batch
    segs = wal.segments
    assert len(segs) > 5
    for a, b in itertools.pairwise(segs):
        assert b.index == a.index + 1 and b.first_seq > a.first_seq
    wal.close()
    wal, recs = WAL.open(tmp_path, segment_size=1024)
    assert recs == all_recs
    assert wal.last_seq == len(all_recs)
    wal.close()


def test_explicit_cut_carries_over_latest_state(tmp_path: Path) -> None:
    """cut() copies the latest HARD_STATE / SNAPSHOT_MARKER / METADATA, in their original
    order, to the new segment; ENTRY records are not copied."""
    wal, _ = WAL.open(tmp_path)
    wal.append(
        [
            Record(METADATA, b"m1"),
            Record(HARD_STATE, b"h1"),
            Record(ENTRY, b"e1"),
            Record(HARD_STATE, b"h2"),
            Record(SNAPSHOT_MARKER, b"s1"),
        ]
    )
    seg = wal.cut()
    assert seg.first_seq == 6
    assert wal.last_seq == 8 and wal.durable_seq == 8
    wal.release_before(seg.first_seq)
    wal.close()
    wal, recs = WAL.open(tmp_path)
    assert recs == [
        Record(METADATA, b"m1"),
        Record(HARD_STATE, b"h2"),
        Record(SNAPSHOT_MARKER, b"s1"),
    ]
    assert wal.first_seq == 6
    wal.close()


def test_release_before_deletes_only_fully_covered_segments(tmp_path: Path) -> None:
    """release_before(seq) deletes segments whose records are all < seq, keeps the one
    holding seq and never deletes the current segment; the WAL reopens from the first kept."""
    wal, _ = WAL.open(tmp_path, carry_over=())
    seqs = []
    for i in range(4):
        seqs.append(wal.append(entries(5, start=5 * i)))
        wal.cut()
    # segments: [1..5] [6..10] [11..15] [16..20] [empty, starts at 21]
    assert [s.first_seq for s in wal.segments] == [1, 6, 11, 16, 21]
    assert wal.release_before(5) == []  # seq 5 lives in the first segment
    removed = wal.release_before(12)
    assert [p.name for p in removed] == [s.name for s in sorted(removed)]
    assert [s.first_seq for s in wal.segments] == [11, 16, 21]
    assert all(not p.exists() for p in removed)
    assert wal.release_before(10**9) != []
    assert [s.first_seq for s in wal.segments] == [21]  # the current segment stays
    wal.append(entries(1, start=99))
    wal.close()
    wal, recs = WAL.open(tmp_path, carry_over=())
    assert recs == entries(1, start=99) and wal.first_seq == 21
    wal.close()


def test_release_before_syncs_undurable_marker(tmp_path: Path) -> None:
    """Releasing up to a not-yet-synced sequence number syncs first."""
    wal, _ = WAL.open(tmp_path)
    wal.append(entries(3))
    wal.cut()
    marker = wal.append([Record(SNAPSHOT_MARKER, b"idx")])
    assert wal.durable_seq < marker
    wal.release_before(marker)
    assert wal.durable_seq >= marker
    wal.close()


# ---------------------------------------------------------------- lifecycle


def test_second_open_is_locked_out(tmp_path: Path) -> None:
    """Two WALs on one directory at once are refused; closing releases the lock."""
    wal, _ = WAL.open(tmp_path)
    with pytest.raises(WALLockedError):
        WAL.open(tmp_path)
    wal.close()
    wal2, _ = WAL.open(tmp_path)
    wal2.close()


def test_use_after_close(tmp_path: Path) -> None:
    """A closed WAL refuses appends; close is idempotent."""
    wal, _ = WAL.open(tmp_path)
    wal.close()
    wal.close()
    with pytest.raises(WALClosedError):
        wal.append(entries(1))


def test_failed_fsync_poisons_the_wal(tmp_path: Path) -> None:
    """After an fsync error every later write fails; reopening recovers what is on disk."""
    fail = {"on": False}

    def flaky_sync(fd: int) -> None:
        if fail["on"]:
            raise OSError(5, "EIO")
        os.fdatasync(fd)

    wal, _ = WAL.open(tmp_path, sync_fn=flaky_sync)
    wal.append(entries(2))
    wal.sync()
    fail["on"] = True
    wal.append(entries(1, start=2))
    with pytest.raises(WALFailedError):
        wal.sync()
    fail["on"] = False
    with pytest.raises(WALFailedError):
        wal.append(entries(1, start=3))
    with pytest.raises(WALFailedError):
        wal.sync()
    assert isinstance(WALFailedError("x"), StorageError)
    wal.close()
    wal, recs = WAL.open(tmp_path)
    assert recs[:2] == entries(2)
    wal.close()


def test_unexpected_wal_file_is_refused(tmp_path: Path) -> None:
    """A .wal file with a foreign name is not silently ignored."""
    write_closed(tmp_path, entries(1))
    (tmp_path / "junk.wal").write_bytes(b"")
    with pytest.raises(StorageError, match=r"junk\.wal"):
        WAL.open(tmp_path)


def test_open_syncs_the_last_segment(tmp_path: Path) -> None:
    """Records left unsynced by a killed writer (page cache only) are fsync'd by open()
    before they are returned as durable."""
    wal, _ = WAL.open(tmp_path, sync_fn=lambda fd: None)  # a writer whose fsyncs never happen
    wal.append(entries(3))
    wal.sync()
    wal.close()
    seg = next(tmp_path.glob("*.wal"))
    synced: list[list[Record]] = []

    def sync(fd: int) -> None:  # what the file holds when it is synced
        synced.append(decode_frames(seg.read_bytes(), SEGMENT_HEADER_SIZE, 1).records)
        os.fdatasync(fd)

    wal, recs = WAL.open(tmp_path, sync_fn=sync)
    assert recs == entries(3)
    assert synced == [entries(3)]  # one sync, of the records returned
    assert wal.durable_seq == 3
    wal.close()
