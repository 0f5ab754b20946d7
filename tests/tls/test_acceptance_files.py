"""Issue #16 item 2, as a user meets it: ``--insecure-listen`` logs a warning at every
start of a real member, and the data dir is created 0700 with WAL segments and snapshots
0600 — also the segments and snapshots written while the member runs (after snapshots and
WAL segment cuts), whatever the umask it was started with.

The insecure listener binds loopback only: ``127.1`` is 127.0.0.1 to the resolver, but not
a loopback literal to coord's check (a name may resolve to anything), so it counts as
reachable from other hosts, as ``0.0.0.0`` would, without exposing anything."""

from __future__ import annotations

import asyncio
import stat
import subprocess
from pathlib import Path

import pytest

from coord.client import Client
from tests.helpers.procs import (
    REPO,
    ProcessGroup,
    coord_argv,
    free_port,
    port_open,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
NAME_OF_LOOPBACK = "127.1"


def test_insecure_listen_warns_at_every_start(procs: ProcessGroup, tmp_path: Path) -> None:
    cport, pport = free_port(), free_port()
    argv = [*coord_argv("n1", tmp_path / "data", cport, pport),
            "--listen-client", f"{NAME_OF_LOOPBACK}:{cport}"]
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False,
                             env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith(
        f"Error: refusing to serve plaintext on --listen-client {NAME_OF_LOOPBACK}:{cport}")
    for start in (1, 2):  # the first start and a restart on the same data dir
        member = procs.spawn("n1", [*argv, "--insecure-listen"], cport,
                             env={"PYTHONPATH": str(REPO), "RAFTCRON_LOG_LEVEL": "info"})
        wait_until(lambda m=member: port_open(cport) or not m.alive(), 30, f"start {start}")
        assert member.alive(), member.log()
        wait_until(lambda m=member: "coord.insecure_listen" in m.log(), 10,
                   f"the warning at start {start}")
        line = next(ln for ln in member.log().splitlines() if "coord.insecure_listen" in ln)
        assert "warn" in line.lower() and f"--listen-client {NAME_OF_LOOPBACK}:{cport}" in line
        assert f"--listen-peer 127.0.0.1:{pport}" not in line  # loopback: not named
        assert member.terminate() == 0


def modes(data: Path) -> dict[str, int]:
    return {str(p.relative_to(data.parent)): stat.S_IMODE(p.stat().st_mode)
            for p in [data, *data.rglob("*")]}


def test_files_stay_owner_only_across_snapshots_and_segment_cuts(
        procs: ProcessGroup, tmp_path: Path) -> None:
    data = tmp_path / "member" / "data"
    cport, pport = free_port(), free_port()
    argv = [*coord_argv("n1", data, cport, pport), "--snapshot-count", "20"]
    # a umask that would leave everything open to everyone
    member = procs.spawn("n1", ["sh", "-c", 'umask 000; exec "$@"', "sh", *argv], cport,
                         env={"PYTHONPATH": str(REPO)})
    wait_until(lambda: port_open(cport) or not member.alive(), 30, "the member")
    assert member.alive(), member.log()

    async def fill() -> None:
        async with Client([f"127.0.0.1:{cport}"], timeout=10) as c:
            for i in range(150):
                await c.put(f"k{i:04}".encode(), b"x" * 200)
    asyncio.run(fill())

    def cut_and_snapshotted() -> bool:
        return (len(list((data / "wal").glob("*.wal"))) >= 2
                and len(list((data / "snap").glob("*.snap"))) >= 2)
    wait_until(cut_and_snapshotted, 30, "WAL segment cuts and several snapshots")
    running = modes(data)
    assert member.terminate() == 0
    for seen in (running, modes(data)):  # while running, and after a clean stop
        dirs = {p: m for p, m in seen.items() if (data.parent / p).is_dir()}
        files = {p: m for p, m in seen.items() if p not in dirs}
        assert dirs and set(dirs.values()) == {0o700}, dirs
        assert any(p.endswith(".wal") for p in files) and any(p.endswith(".snap")
                                                              for p in files)
        assert set(files.values()) == {0o600}, files
    assert stat.S_IMODE(data.parent.stat().st_mode) == 0o700  # created by the member too
