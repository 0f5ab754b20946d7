"""A real crash test: kill -9 a process that appends and syncs, then check the WAL."""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from coord.storage import WAL

REPO = Path(__file__).resolve().parents[2]


def run_and_kill(wal_dir: Path, seed: int, kill_after: int, log: Path) -> int:
    """Start the child, kill -9 it after it reported ``kill_after`` syncs; return the highest
    counter it ever reported as synced (including lines still in the pipe)."""
    with log.open("ab") as err:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.storage._crash_child", str(wal_dir), str(seed)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err,
        )
        reported = 0
        try:
            assert child.stdout is not None
            for _ in range(kill_after):
                line = child.stdout.readline()
                if not line:
                    pytest.fail(f"child died early (rc={child.wait()}): {log.read_text()[-2000:]}")
                reported = int(line)
            os.kill(child.pid, signal.SIGKILL)
            for line in child.stdout:  # lines written before the kill count too
                reported = max(reported, int(line))
        finally:
            child.kill()
            child.wait()
            if child.stdout is not None:
                child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return reported


@pytest.mark.slow
def test_kill_9_never_loses_a_synced_record(tmp_path: Path) -> None:
    """Over several kill -9 rounds at random points, every record the child reported as
    synced is in the reopened WAL, in order, with no gap and nothing after a gap."""
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    seed = rng.randrange(2**32)
    wal_dir = tmp_path / "wal"
    log = tmp_path / "child.log"
    highest = 0
    for round_ in range(6):
        kill_after = rng.randint(1, 300)
        reported = run_and_kill(wal_dir, seed + round_, kill_after, log)
        assert reported > highest
        wal, records = WAL.open(wal_dir, segment_size=256 * 1024, carry_over=())
        wal.close()
        counters = [struct.unpack_from("<Q", r.data)[0] for r in records]
        assert counters == list(range(1, len(counters) + 1)), f"gap or reorder (seed {seed})"
        assert len(counters) >= reported, (
            f"round {round_} (seed {seed}, kill after {kill_after}): synced up to "
            f"{reported} but only {len(counters)} records survived"
        )
        highest = len(counters)
    assert len(list(wal_dir.glob("*.wal"))) > 1  # the rounds crossed segment cuts
