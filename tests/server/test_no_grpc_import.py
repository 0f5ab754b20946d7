"""A member (``raftcron coord serve``) never loads grpcio on its default path: it serves both
ports with coord's own HTTP/2 server and sends to its peers with coord's own client, and
grpcio costs about 10 MB of resident memory (docs/grpc-server.md). Checked where it cannot
be fooled: the shared objects mapped into the running process (grpcio's C core is
``cygrpc*.so``)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from coord.client import Client
from tests.helpers.procs import REPO, ProcessGroup, start_coord
from tests.process.cluster import CoordCluster


def grpc_mapped(pid: int) -> list[str]:
    """The lines of the process' memory map that belong to grpcio's C extension."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return [line for line in maps.splitlines() if "cygrpc" in line or "/grpc/" in line]


def test_importing_the_member_does_not_import_grpc() -> None:
    code = ("import sys, scheduler.cli, coord.server.server\n"
            "print(sorted(m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_serving_member_has_no_grpc_mapped(procs: ProcessGroup) -> None:
    proc = start_coord(procs)

    async def body() -> None:
        async with Client([proc.endpoint], timeout=5) as cli:
            put = await cli.put("/no-grpc/a", "1")
            got = await cli.get("/no-grpc/a")
            assert [(kv.value, kv.mod_revision) for kv in got.kvs] == [(b"1", put.revision)]
            lease = await cli.grant(30)
            assert await cli.keepalive_once(lease.id) == 30

    asyncio.run(body())
    assert proc.alive(), proc.log()
    assert grpc_mapped(proc.popen.pid) == []
    assert "Traceback" not in proc.log()


@pytest.mark.timeout(120)
def test_cluster_members_have_no_grpc_mapped(procs: ProcessGroup) -> None:
    """Peer traffic too: Raft's streams, and the unary peer calls a follower makes when a
    client renews or queries a lease through it (forwarded to the leader)."""
    c = CoordCluster(procs, size=3, faults=False)
    c.start()

    async def body() -> None:
        leader = await c.wait_leader()
        follower = next(n for n in c.members if n != leader)
        async with Client([c.members[follower].endpoint], timeout=5) as cli:
            lease = await cli.grant(30)
            await cli.put("/no-grpc/b", "2", lease=lease.id)
            assert await cli.keepalive_once(lease.id) == 30
            ttl = await cli.time_to_live(lease.id, keys=True)
            assert ttl.keys == [b"/no-grpc/b"]
        await c.wait_caught_up()

    asyncio.run(body())
    for name, member in c.members.items():
        assert member.proc is not None and member.alive(), c.logs()
        assert grpc_mapped(member.proc.popen.pid) == [], name
    assert "Traceback" not in c.logs()
