"""Recovery as a user meets it: `raftcron coord serve` on a damaged data dir.

A torn last WAL record (a crash mid-append) is repaired and the server starts with every
complete write; a flipped byte in the middle of the WAL stops the start with a clear error
naming the file and offset, and a non-zero exit status, without touching the files.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from coord.client import Client
from coord.storage.codec import SEGMENT_HEADER_SIZE, decode_frames
from tests.helpers.fs import require_preallocation
from tests.helpers.procs import ProcessGroup, coord_argv, free_port, start_coord

N_KEYS = 40


def _fill(procs: ProcessGroup, data: Path) -> None:
    server = start_coord(procs, data_dir=data)

    async def body() -> None:
        async with Client([server.endpoint]) as c:
            for i in range(N_KEYS):
                await c.put(f"/rec/{i:03d}", f"value-{i}" * 20)
    asyncio.run(body())
    server.kill9()


def _segment(data: Path) -> Path:
    segs = sorted((data / "wal").glob("*.wal"))
    assert segs, "no WAL segment written"
    return segs[-1]


def _records_end(seg: Path) -> int:
    """Where the segment's records end: a killed member's segment is preallocated, so zeros
    follow them up to its full size."""
    first_seq = int(seg.stem.split("-")[1], 16)
    return decode_frames(seg.read_bytes(), SEGMENT_HEADER_SIZE, first_seq).end


def _count(endpoint: str) -> int:
    async def body() -> int:
        async with Client([endpoint]) as c:
            return (await c.get("/rec/", prefix=True, count_only=True)).count
    return asyncio.run(body())


def test_torn_tail_is_repaired_on_start(procs: ProcessGroup, tmp_path: Path) -> None:
    require_preallocation(tmp_path)
    data = tmp_path / "d"
    _fill(procs, data)
    seg = _segment(data)
    end = _records_end(seg)
    assert seg.stat().st_size > end, "the segment should be preallocated past its records"
    with seg.open("r+b") as f:
        f.seek(end - 7)
        f.write(bytes(7))  # the last record loses its tail, as in a crash mid-write
    server = start_coord(procs, data_dir=data)
    assert _count(server.endpoint) == N_KEYS - 1
    assert "wal.torn_tail_repaired" in server.log()


def test_corrupt_middle_refuses_to_start(procs: ProcessGroup, tmp_path: Path) -> None:
    data = tmp_path / "d"
    _fill(procs, data)
    seg = _segment(data)
    blob = bytearray(seg.read_bytes())
    middle = _records_end(seg) // 2
    blob[middle] ^= 0xFF
    seg.write_bytes(bytes(blob))
    argv = coord_argv("n1", data, free_port(), free_port())
    res = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]),
                              "PATH": "/usr/bin:/bin"})
    assert res.returncode == 3, res.stderr
    assert "corrupt WAL" in res.stderr and seg.name in res.stderr, res.stderr
    assert seg.read_bytes() == bytes(blob), "a refused recovery must not change the files"
