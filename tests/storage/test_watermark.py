"""The durable watermark file, and the owner-only modes of everything storage creates."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from coord.storage import WAL, SnapshotStore, Watermark, WatermarkError


def test_mark_and_read(tmp_path: Path) -> None:
    wm = Watermark(tmp_path / "wal.watermark")
    assert wm.read() is None and wm.seq == -1
    assert wm.mark(7)
    assert not wm.mark(7) and not wm.mark(3), "never moves back, never rewrites the same"
    mark = wm.read()
    assert mark is not None and (mark.seq, mark.clean) == (7, False)
    assert wm.mark(7, clean=True)
    mark = wm.read()
    assert mark is not None and mark.clean
    assert not list(tmp_path.glob("*.tmp"))
    assert stat.S_IMODE((tmp_path / "wal.watermark").stat().st_mode) == 0o600


@pytest.mark.parametrize("text", ["", "{", "[]", '{"seq": "x", "clean": false, "at": ""}',
                                  '{"seq": -1, "clean": false, "at": ""}', '{"clean": true}'])
def test_a_damaged_watermark_is_an_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "wal.watermark"
    path.write_text(text)
    with pytest.raises(WatermarkError, match=r"damaged|names record"):
        Watermark(path).read()


def test_storage_creates_owner_only_dirs_and_files(tmp_path: Path) -> None:
    """etcd's modes: directories 0700, files 0600 (they were 0755 and 0644)."""
    wal, _ = WAL.open(tmp_path / "a" / "wal", segment_size=4096)
    wal.close()
    snaps = SnapshotStore(tmp_path / "a" / "snap")
    snaps.save(1, 1, b"data")
    for d in (tmp_path / "a", tmp_path / "a" / "wal", tmp_path / "a" / "snap"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    files = [p for p in (tmp_path / "a").rglob("*") if p.is_file()]
    assert len(files) == 3  # segment, LOCK, snapshot
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
