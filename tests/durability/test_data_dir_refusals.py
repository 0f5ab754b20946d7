"""`raftcron coord serve` on a data dir it must not start from: one `Error:` line, exit 3.

Each case is what a user met (#13 items 13 and 15, #15 item 8): a data dir that is a file
or on a read-only file system, a damaged newest snapshot (a 91-line traceback ending
`WAL has a gap` before), a WAL cut to half its records (repaired as a "torn tail" with half
the history before), a deleted WAL (an empty store at revision 1 before), a deleted last
segment, and a flipped byte in the last WAL record (dropped with a warning before). The
refused data dir is left as it was; a genuinely torn last record still starts (see
``test_recovery_cli.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from coord.client import Client
from coord.storage.codec import SEGMENT_HEADER_SIZE, decode_frames
from tests.helpers.procs import REPO, ProcessGroup, coord_argv, free_port, start_coord, wait_until

N_KEYS = 60


def _serve_refused(data: Path, *extra: str, agent: bool = False) -> str:
    """Run `coord serve` (or `agent`) on ``data``; assert it stops with exit 3 and one
    `Error:` line (after the JSON log lines), no traceback; return that line."""
    argv = [*coord_argv("n1", data, free_port(), free_port()), *extra]
    if agent:
        argv[argv.index("coord"):argv.index("serve") + 1] = ["agent"]
    res = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr and "│" not in res.stderr, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("Error: ")]
    others = [ln for ln in res.stderr.splitlines()
              if not ln.startswith("Error: ") and not ln.startswith("{")]
    assert len(errors) == 1 and not others, res.stderr
    return errors[0]


def _put(endpoint: str, start: int, n: int) -> None:
    async def body() -> None:
        async with Client([endpoint]) as c:
            for i in range(start, start + n):
                await c.put(f"/rec/{i:03d}", f"value-{i}" * 20)
    asyncio.run(body())


def _count(endpoint: str) -> int:
    async def body() -> int:
        async with Client([endpoint]) as c:
            return (await c.get("/rec/", prefix=True, count_only=True)).count
    return asyncio.run(body())


def _filled(procs: ProcessGroup, data: Path, *, stop: str = "term",
            snapshot_count: int | None = None) -> None:
    """A member that took N_KEYS writes, then stopped (SIGTERM) or was killed (kill -9)
    once the watermark covered every record on disk."""
    server = start_coord(procs, data_dir=data)
    if snapshot_count is not None:  # restart with small snapshots: several files, segments
        server.terminate()
        argv = [*server.argv, "--snapshot-count", str(snapshot_count)]
        server = procs.spawn("n1", argv, server.client_port, env={"PYTHONPATH": str(REPO)})
        wait_until(lambda: _up(server.endpoint) or not server.alive(), 30, "restart")
    _put(server.endpoint, 0, N_KEYS)
    if stop == "term":
        assert server.terminate() == 0
        return
    mark = data / "wal.watermark"

    def covered() -> bool:
        seg = _segments(data)[-1]
        end_seq = decode_frames(seg.read_bytes(), SEGMENT_HEADER_SIZE, _first_seq(seg)).next_seq
        return mark.exists() and int(json.loads(mark.read_text())["seq"]) >= end_seq - 1
    wait_until(covered, 15, "the watermark to cover the WAL's records")
    server.kill9()


def _up(endpoint: str) -> bool:
    with contextlib.suppress(Exception):
        _count(endpoint)
        return True
    return False


def _segments(data: Path) -> list[Path]:
    return sorted((data / "wal").glob("*.wal"))


def _first_seq(seg: Path) -> int:
    return int(seg.stem.split("-")[1], 16)


def _records_end(seg: Path) -> int:
    return decode_frames(seg.read_bytes(), SEGMENT_HEADER_SIZE, _first_seq(seg)).end


def _tree(data: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*"))
            if p.is_file() and p.name != "LOCK"}


# ---------------------------------------------------------------- unusable data dirs


@pytest.mark.parametrize("agent", [False, True])
def test_a_data_dir_that_is_a_file(tmp_path: Path, agent: bool) -> None:
    data = tmp_path / "d"
    data.write_text("not a directory")
    line = _serve_refused(data, agent=agent)
    assert line == f"Error: data dir {data} is not a directory"


def test_a_damaged_watermark(procs: ProcessGroup, tmp_path: Path) -> None:
    data = tmp_path / "d"
    _filled(procs, data)
    (data / "wal.watermark").write_text("{not json")
    line = _serve_refused(data)
    assert "wal.watermark is damaged" in line and "delete it" in line, line


@contextlib.contextmanager
def _read_only(path: Path, source: Path | None = None) -> Iterator[None]:
    """``path`` as a read-only mount: an empty tmpfs, or a bind mount of ``source``."""
    path.mkdir()
    if source is None:
        cmd = ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)]
    else:
        cmd = ["mount", "--bind", "-o", "ro", str(source), str(path)]
    if os.geteuid() != 0 or subprocess.run(cmd, check=False, capture_output=True).returncode:
        pytest.skip("mounting a read-only file system needs root")
    try:
        if source is not None:  # older mount(8) ignores ro on a bind: remount it
            subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_a_data_dir_on_a_read_only_file_system(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    with _read_only(ro):
        assert _serve_refused(ro / "data") == (
            f"Error: data dir {ro / 'data'}: {ro / 'data'} is on a read-only file system")
        assert _serve_refused(ro) == f"Error: data dir {ro} is on a read-only file system"


def test_a_member_data_dir_mounted_read_only(procs: ProcessGroup, tmp_path: Path) -> None:
    data = tmp_path / "d"
    _filled(procs, data)
    ro = tmp_path / "ro"
    with _read_only(ro, source=data):
        assert _serve_refused(ro) == f"Error: data dir {ro} is on a read-only file system"


def test_modes_are_owner_only(procs: ProcessGroup, tmp_path: Path) -> None:
    """Data, WAL and snapshot dirs 0700; WAL segments, snapshots, lock, watermark 0600
    (etcd's modes; they were 0755 and 0644)."""
    data = tmp_path / "new" / "d"
    _filled(procs, data)
    for d in (data.parent, data, data / "wal", data / "snap"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    files = [p for p in data.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".wal", ".snap", ".watermark"}
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


# ---------------------------------------------------------------- lost or damaged data


def test_a_damaged_newest_snapshot_the_log_no_longer_covers(procs: ProcessGroup,
                                                            tmp_path: Path) -> None:
    data = tmp_path / "d"
    _filled(procs, data, snapshot_count=20)
    newest = sorted((data / "snap").glob("*.snap"))[-1]
    blob = bytearray(newest.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    newest.write_bytes(bytes(blob))
    before = _tree(data)
    line = _serve_refused(data)
    assert f"{newest.name}: payload CRC mismatch" in line and "are in no file" in line, line
    assert "etcdctl member remove" in line and "restore the data dir from a backup" in line
    assert _tree(data).keys() == before.keys(), "the damaged snapshot must not be renamed"


@pytest.mark.parametrize("stop", ["term", "kill9"])
def test_a_wal_cut_to_half_its_records(procs: ProcessGroup, tmp_path: Path,
                                       stop: str) -> None:
    """The last segment cut to half its records — at a record boundary or inside one —
    is refused, saying how many records are missing, after a clean stop or a kill -9.
    Deleting the watermark, as the message says, starts the member from what is left."""
    data = tmp_path / "d"
    _filled(procs, data, stop=stop)
    seg = _segments(data)[-1]
    full = seg.read_bytes()
    seg.write_bytes(full[: _records_end(seg) // 2])
    cut = seg.read_bytes()
    line = _serve_refused(data)
    assert "lost WAL records that were durable" in line and "records are missing" in line
    assert f"delete {data / 'wal.watermark'}" in line, line
    assert seg.read_bytes() == cut, "a refused start must not repair the file"
    (data / "wal.watermark").unlink()
    server = start_coord(procs, data_dir=data)
    assert 0 < _count(server.endpoint) < N_KEYS


def test_a_deleted_wal(procs: ProcessGroup, tmp_path: Path) -> None:
    """The WAL file (or its whole directory) deleted: refused, where it used to start an
    empty store at revision 1."""
    data = tmp_path / "d"
    _filled(procs, data)
    for seg in _segments(data):
        seg.unlink()
    line = _serve_refused(data)
    assert "the WAL holds no records" in line and "etcdctl member remove" in line, line
    assert not _segments(data), "a refused start must not create a new WAL"
    shutil.rmtree(data / "wal")
    assert "the WAL holds no records" in _serve_refused(data)
    assert not (data / "wal").exists()
    (data / "wal.watermark").unlink()
    assert "holds snapshots" in _serve_refused(data)


def test_a_deleted_last_segment(procs: ProcessGroup, tmp_path: Path) -> None:
    data = tmp_path / "d"
    _filled(procs, data, snapshot_count=20)
    segs = _segments(data)
    assert len(segs) >= 2
    segs[-1].unlink()
    line = _serve_refused(data)
    assert "lost WAL records that were durable" in line, line


def test_a_flipped_byte_in_the_last_record(procs: ProcessGroup, tmp_path: Path) -> None:
    """A killed member's last record with one bit flipped is damage, not a torn write
    (etcd: `walpb: crc mismatch`): refused, files unchanged. It started with a key fewer
    and a warning before."""
    data = tmp_path / "d"
    _filled(procs, data, stop="kill9")
    (data / "wal.watermark").unlink()  # the rule holds without the watermark too
    seg = _segments(data)[-1]
    end = _records_end(seg)
    blob = bytearray(seg.read_bytes())
    blob[end - 5] ^= 0x01
    seg.write_bytes(bytes(blob))
    line = _serve_refused(data)
    assert "its payload CRC does not match: a damaged record, not a torn write" in line, line
    assert seg.read_bytes() == bytes(blob)
