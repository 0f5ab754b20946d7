"""Leases in a 3-member cluster: keepalives through a follower reach the leader, a leader
failover does not expire a live session (the new leader extends every lease), and only the
leader expires leases, through the log, so every member drops the key."""

from __future__ import annotations

import asyncio
import time

import pytest

from coord.client import Client
from tests.helpers.observe import events_during
from tests.helpers.procs import ProcessGroup
from tests.process.cluster import CoordCluster, await_until

pytestmark = pytest.mark.timeout(120)


def test_leases_across_failover(procs: ProcessGroup) -> None:
    c = CoordCluster(procs, size=3, faults=False)
    c.start()
    asyncio.run(_leases(c))


async def _leases(c: CoordCluster) -> None:
    leader = await c.wait_leader()
    follower = next(n for n in c.members if n != leader)
    other = next(n for n in c.members if n not in (leader, follower))
    fep = c.members[follower].endpoint
    async with Client([fep], timeout=5) as cli:
        live = await cli.grant(6)
        dead = await cli.grant(2)
        await cli.put("/lease/live", "x", lease=live.id)
        await cli.put("/lease/dead", "y", lease=dead.id)
        # keepalives through the follower are forwarded to the leader's lessor
        assert await cli.keepalive_once(live.id) == 6
        ttl = await cli.time_to_live(live.id)
        assert 0 < ttl.ttl <= 6
        # the unrenewed lease expires on the leader, through the log: gone everywhere
        t0 = time.monotonic()

        async def dead_gone() -> bool:
            await cli.keepalive_once(live.id)
            return (await cli.get("/lease/dead")).count == 0
        await await_until(dead_gone, 10, "the unrenewed lease to expire", step=0.5)
        assert time.monotonic() - t0 >= 1.0
    for name in c.members:
        async with Client([c.members[name].endpoint]) as m:
            await c.wait_caught_up()
            assert (await m.get("/lease/dead", serializable=True)).count == 0
            assert (await m.get("/lease/live", serializable=True)).count == 1
    # kill -9 the leader while the live session keeps renewing through the survivors
    survivors = [c.members[n].endpoint for n in (follower, other)]
    async with Client(survivors, timeout=5) as cli:
        ka = cli.keep_alive(live.id, 6)
        try:
            c.kill9(leader)
            await c.wait_leader([follower, other])
            before = await cli.get("/lease/live")
            # Watched for longer than the TTL (only renewals keep it alive): no event at all.
            seen = await events_during(cli, "/lease/live", 7,
                                       start_revision=before.header.revision + 1)
            assert before.count == 1 and seen == [], f"a failover expired a live session: {seen}"
            got = await cli.get("/lease/live")
            assert got.count == 1, "a failover expired a live session"
        finally:
            await ka.stop()
        # once nobody renews it, the new leader expires it
        async def live_gone() -> bool:
            return (await cli.get("/lease/live")).count == 0
        await await_until(live_gone, 15, "the abandoned lease to expire on the new leader")
