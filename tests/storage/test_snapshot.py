"""Snapshots: atomic save, newest valid wins, corrupt fallback, tmp files, purge."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from coord.storage import CorruptSnapshotError, SnapshotFile, SnapshotStore
from coord.storage.snapshot import decode_snapshot


def test_empty_store_has_no_snapshot(tmp_path: Path) -> None:
    """A new directory is created and holds no snapshot."""
    store = SnapshotStore(tmp_path / "snap")
    assert store.directory.is_dir()
    assert store.load_newest() is None


def test_save_and_load_newest(tmp_path: Path) -> None:
    """The snapshot with the highest index is returned, byte-identical."""
    store = SnapshotStore(tmp_path)
    blobs = {i: os.urandom(1000 * i) for i in (1, 5, 3)}
    for i, blob in blobs.items():
        store.save(i * 10, 2, blob)
    assert store.load_newest() == SnapshotFile(50, 2, blobs[5])
    assert [(i, t) for i, t, _ in store.entries()] == [(10, 2), (30, 2), (50, 2)]


def test_empty_payload_roundtrip(tmp_path: Path) -> None:
    """A zero-length snapshot payload is valid."""
    store = SnapshotStore(tmp_path)
    store.save(7, 1, b"")
    assert store.load_newest() == SnapshotFile(7, 1, b"")


def test_leftover_tmp_file_is_ignored_and_purged(tmp_path: Path) -> None:
    """A crash mid-save leaves only a .tmp file: load ignores it, purge removes it."""
    store = SnapshotStore(tmp_path)
    store.save(5, 1, b"good")
    tmp = tmp_path / f"{9:016x}-{1:016x}.snap.tmp"
    tmp.write_bytes(b"half a snapshot")
    assert store.load_newest() == SnapshotFile(5, 1, b"good")
    assert tmp in store.purge(keep=3)
    assert not tmp.exists()


@pytest.mark.parametrize("damage", ["flip_payload", "flip_header", "truncate", "extend", "empty"])
def test_corrupt_newest_falls_back_to_previous(tmp_path: Path, damage: str) -> None:
    """A damaged newest snapshot is skipped with a warning, renamed .broken, and the
    previous valid one is returned."""
    store = SnapshotStore(tmp_path)
    store.save(10, 1, b"older" * 100)
    newest = store.save(20, 2, b"newer" * 100)
    blob = bytearray(newest.read_bytes())
    if damage == "flip_payload":
        blob[-1] ^= 1
    elif damage == "flip_header":
        blob[10] ^= 1
    elif damage == "truncate":
        del blob[-7:]
    elif damage == "extend":
        blob += b"\0"
    else:
        blob = bytearray()
    newest.write_bytes(bytes(blob))
    with capture_logs() as logs:
        assert store.load_newest() == SnapshotFile(10, 1, b"older" * 100)
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["snapshot.corrupt_skipped"]
    assert not newest.exists()
    assert newest.with_name(newest.name + ".broken").exists()


def test_all_corrupt_gives_none(tmp_path: Path) -> None:
    """If no snapshot passes its checks, there is none."""
    store = SnapshotStore(tmp_path)
    path = store.save(1, 1, b"x")
    path.write_bytes(b"garbage")
    assert store.load_newest() is None


def test_name_and_header_must_agree(tmp_path: Path) -> None:
    """A snapshot file renamed to another index is refused."""
    store = SnapshotStore(tmp_path)
    path = store.save(3, 1, b"data")
    with pytest.raises(CorruptSnapshotError, match="name disagrees"):
        decode_snapshot(path.with_name(f"{4:016x}-{1:016x}.snap"), path.read_bytes())


def test_purge_keeps_newest(tmp_path: Path) -> None:
    """purge(keep=N) deletes everything but the N newest snapshots."""
    store = SnapshotStore(tmp_path)
    for i in range(1, 7):
        store.save(i, 1, b"s%d" % i)
    removed = store.purge(keep=2)
    assert len(removed) == 4
    assert [i for i, _, _ in store.entries()] == [5, 6]
    assert store.load_newest() == SnapshotFile(6, 1, b"s6")
    with pytest.raises(ValueError):
        store.purge(keep=0)


def test_save_replaces_same_name_atomically(tmp_path: Path) -> None:
    """Saving the same (index, term) twice leaves one complete file with the new data."""
    store = SnapshotStore(tmp_path)
    store.save(4, 1, b"first")
    store.save(4, 1, b"second")
    assert store.load_newest() == SnapshotFile(4, 1, b"second")
    assert len(store.entries()) == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_save_fsyncs_the_file_before_rename(tmp_path: Path) -> None:
    """The injected sync runs on the temporary file while the final name does not exist."""
    seen: list[bool] = []
    final = tmp_path / f"{8:016x}-{2:016x}.snap"

    def sync(fd: int) -> None:
        seen.append(final.exists())
        os.fsync(fd)

    store = SnapshotStore(tmp_path, sync_fn=sync)
    store.save(8, 2, b"payload")
    assert seen == [False] and final.exists()


def test_purge_waits_for_a_save_in_progress_on_another_thread(tmp_path: Path) -> None:
    """A member writes snapshot files on one thread and purges old ones on another: a purge
    must not delete the temporary file of a save that is still being written (the save
    then failed at its rename and that snapshot never reached the disk)."""
    import threading

    writing = threading.Event()
    release = threading.Event()

    def slow_sync(fd: int) -> None:
        writing.set()
        assert release.wait(10)

    store = SnapshotStore(tmp_path / "snap", sync_fn=slow_sync)
    release.set()
    store.save(1, 1, b"one")
    store.save(2, 1, b"two")
    release.clear()
    writing.clear()
    errors: list[BaseException] = []

    def save3() -> None:
        try:
            store.save(3, 1, b"three")
        except BaseException as err:  # noqa: BLE001 - reported to the test thread
            errors.append(err)

    saver = threading.Thread(target=save3)
    saver.start()
    assert writing.wait(10)  # snapshot 3 is half written (its .tmp exists)
    purged: list[Path] = []
    purger = threading.Thread(target=lambda: purged.extend(store.purge(keep=2)))
    purger.start()
    purger.join(0.2)
    assert purger.is_alive()  # waits for the save
    release.set()
    saver.join(10)
    purger.join(10)
    assert not errors
    assert [i for i, _, _ in store.entries()] == [2, 3]
    assert [p.name for p in purged] == [f"{1:016x}-{1:016x}.snap"]
    loaded = store.load_newest()
    assert loaded is not None and loaded.data == b"three"
