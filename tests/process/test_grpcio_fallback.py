"""``RAFTCRON_GRPC_SERVER=grpcio``: members serve both ports with ``grpc.aio.server``
instead of coord's own HTTP/2 server (docs/grpc-server.md). The fallback must stay a
working cluster: writes through a follower, watches, leases, a leader failover."""

from __future__ import annotations

import asyncio

import pytest

from coord.client import Client
from tests.helpers.procs import ProcessGroup
from tests.process.cluster import CoordCluster

pytestmark = pytest.mark.timeout(120)


def test_cluster_on_the_grpcio_fallback(procs: ProcessGroup) -> None:
    c = CoordCluster(procs, size=3, faults=False, extra_env={"RAFTCRON_GRPC_SERVER": "grpcio"})
    c.start()
    asyncio.run(_exercise(c))
    logs = c.logs()
    assert logs.count('"grpc_server": "grpcio"') == 3, logs
    assert "Traceback" not in logs


async def _exercise(c: CoordCluster) -> None:
    leader = await c.wait_leader()
    follower, other = (n for n in c.members if n != leader)
    async with Client([c.members[follower].endpoint], timeout=5) as cli, \
            Client([c.members[other].endpoint], timeout=5) as watcher:
        lease = await cli.grant(30)
        put = await cli.put("/fallback/a", "1", lease=lease.id)
        got = await watcher.get("/fallback/a")
        assert got.kvs[0].value == b"1" and got.kvs[0].lease == lease.id
        events = watcher.watch("/fallback/", prefix=True, start_revision=put.revision)
        seen = await asyncio.wait_for(anext(events), 10)
        assert [(e.kv.key, e.kv.mod_revision) for e in seen.events] == \
            [(b"/fallback/a", put.revision)]
        await events.aclose()  # type: ignore[attr-defined]
    c.kill9(leader)
    survivors = [c.members[n].endpoint for n in (follower, other)]
    await c.wait_leader([follower, other])
    async with Client(survivors, timeout=5) as cli:
        await cli.put("/fallback/b", "2")
        assert (await cli.get("/fallback/", prefix=True)).count == 2
