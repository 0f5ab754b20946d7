"""One forged heartbeat must never cost a cluster its leader for good (review finding: a
heartbeat at exactly the old absolute term cap, in the leader's name, was adopted; every
election then asked for cap + 1, which every member refused — no leader, even after a
restart). Terms are now bounded relative to the receiver's own term."""

from __future__ import annotations

import asyncio

import pytest

from coord.client import Client
from coord.pb import raft_pb2
from coord.raft import Message, MessageType
from coord.rpc.h2.client import StreamCallError
from coord.server.transport import MAX_TERM_STEP, H2PeerStub, message_to_pb
from tests.helpers.procs import ProcessGroup
from tests.process.cluster import CoordCluster

pytestmark = pytest.mark.timeout(180)


async def _forge_and_recover(c: CoordCluster) -> None:
    leader = await c.wait_leader()
    ids = c.ids()
    follower = next(n for n in c.members if n != leader)
    async with Client(c.endpoints, timeout=5) as cli:
        resp = await cli.get("/k")
        cluster_id, term = resp.header.cluster_id, resp.header.raft_term
    stub = H2PeerStub(c.members[follower].peer)
    for forged_term in (2**48, term + MAX_TERM_STEP):
        batch = raft_pb2.MessageBatch(cluster_id=cluster_id, messages=[message_to_pb(
            Message(MessageType.HEARTBEAT, ids[follower], ids[leader], term=forged_term))])
        setattr(batch, "from", ids[leader])
        try:
            await stub.send_batch(batch, timeout=5)
        except StreamCallError:
            assert forged_term == 2**48  # far above: refused
    # Whatever was adopted, the cluster elects a leader again and takes writes.
    await c.wait_leader(timeout=60)
    async with Client(c.endpoints, timeout=5) as cli:
        await cli.put("/after", "ok")


def test_a_forged_term_never_stops_elections(procs: ProcessGroup) -> None:
    c = CoordCluster(procs, size=3, faults=False)
    c.start()
    asyncio.run(_forge_and_recover(c))
    for name in list(c.members):  # and across a full restart
        c.kill9(name)
    c.start()

    async def writes() -> None:
        await c.wait_leader(timeout=60)
        async with Client(c.endpoints, timeout=5) as cli:
            await cli.put("/restarted", "ok")
    asyncio.run(writes())
