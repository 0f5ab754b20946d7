"""A 3-member coord cluster under concurrent recorded load survives, one after the other:
kill -9 of the leader (and its restart), kill -9 of a follower, isolation of the leader from
both followers, and kill -9 of all three members (and their restart).

After each fault writes resume (the unavailability window is measured and printed), and at
the end the recorded history (puts, CAS txns, linearizable gets) passes the
linearizability checkers and every acknowledged write is found at its revision.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from coord.client import Client
from tests.helpers.history import Kind, Op, Status
from tests.helpers.linearizability import check_history
from tests.helpers.procs import ProcessGroup
from tests.process.cluster import CoordCluster, await_until
from tests.process.load import Workload, acked_writes

pytestmark = pytest.mark.timeout(240)


async def _window(load: Workload, fault_at: float, what: str, timeout: float = 20.0) -> float:
    async def resumed() -> bool:
        return load.first_write_after(fault_at) is not None
    await await_until(resumed, timeout, f"writes to resume after {what}")
    first = load.first_write_after(fault_at)
    assert first is not None
    window = first - fault_at
    print(f"unavailability after {what}: {window:.3f}s")
    return window


def test_faults_under_load(procs: ProcessGroup) -> None:
    # Frequent snapshots: restarts recover from snapshot + WAL, and a member that was down
    # for a while is more than the kept catch-up entries behind, so it gets a snapshot.
    cluster = CoordCluster(procs, size=3, snapshot_count=200)
    cluster.start()
    cluster.run(_scenario)


async def _scenario(c: CoordCluster) -> None:
    leader = await c.wait_leader()
    names = list(c.members)
    eps = {n: c.members[n].endpoint for n in names}
    # Clients 0-2 fail over across all members; clients 3-5 are pinned to one member each.
    endpoints = {i: [eps[names[(i + k) % 3]] for k in range(3)] for i in range(3)}
    endpoints.update({3 + i: [eps[n]] for i, n in enumerate(names)})
    async with Client(c.endpoints) as cli:
        base_rev = (await cli.get("/lin/", prefix=True)).header.revision
    load = Workload(endpoints)
    load.start()
    windows: dict[str, float] = {}
    await asyncio.sleep(1.5)  # some history before the first fault

    # 1. kill -9 the leader, then restart it
    t = time.monotonic()
    c.kill9(leader)
    windows["leader kill -9"] = await _window(load, t, "kill -9 of the leader")
    new_leader = await c.wait_leader([n for n in names if n != leader])
    c.spawn(leader)
    c.wait_listening(leader)
    await c.wait_caught_up(timeout=30)
    leader = await c.wait_leader()
    assert leader == new_leader or leader in names

    # 2. kill -9 a follower, then restart it
    follower = next(n for n in names if n != leader)
    t = time.monotonic()
    c.kill9(follower)
    windows["follower kill -9"] = await _window(load, t, "kill -9 of a follower")
    c.spawn(follower)
    c.wait_listening(follower)
    await c.wait_caught_up(timeout=30)

    # 3. isolate the leader from both followers
    leader = await c.wait_leader()
    others = [n for n in names if n != leader]
    pinned = 3 + names.index(leader)  # the client that only talks to the old leader
    t_cut = time.monotonic()
    await c.fault(leader, others)
    windows["leader isolated"] = await _window(load, t_cut, "isolation of the leader")
    await c.wait_leader(others)

    async def stepped_down() -> bool:
        st = await c.status(leader)
        return st is not None and st.leader != c.ids()[leader]
    await await_until(stepped_down, 10, "the isolated leader to step down (check-quorum)")
    await asyncio.sleep(3.0)  # let the pinned client try while the old leader is cut off
    t_heal = time.monotonic()
    await c.fault(leader, [])
    await c.wait_caught_up(timeout=30)
    hist = load.recorder.history()
    # Once the old leader has surely stepped down (an election timeout after the cut, plus
    # slack), nothing its clients do may succeed until the partition heals.
    lo = t_cut + 2.5
    cut_off = [o for o in hist if o.client == pinned and o.call <= t_heal
               and (o.ret is None or o.ret >= lo)]
    assert cut_off, "the pinned client made no attempt during the partition"
    assert not [o for o in cut_off if o.status is Status.OK and o.ret is not None
                and o.ret <= t_heal], "a client of the isolated old leader got a success"
    # And nothing it was told succeeded during the partition was a write that is lost:
    # checked below for the whole history.

    # 4. kill -9 all three, then restart them
    t = time.monotonic()
    for n in names:
        c.kill9(n)
    await asyncio.sleep(0.3)  # the whole cluster down a moment (the fault, not a wait)
    for n in names:
        c.spawn(n)
    for n in names:
        c.wait_listening(n)
    windows["all killed"] = await _window(load, t, "kill -9 of all members + restart", 30)
    await c.wait_leader()
    await asyncio.sleep(1.0)  # a second of history after the restart (not a wait for a condition)
    ops = await load.finish()
    await c.wait_caught_up(timeout=30)

    print("unavailability windows:", {k: round(v, 3) for k, v in windows.items()})
    ok = [o for o in ops if o.status is Status.OK]
    print(f"history: {len(ops)} ops, {len(ok)} ok, "
          f"{sum(o.status is Status.UNKNOWN for o in ops)} unknown")
    assert len([o for o in ok if o.kind is not Kind.GET]) > 50
    result = check_history(ops, initial_revision=base_rev)
    assert result, result.report()

    # Every acknowledged write is there, at the revision it was acknowledged with, on
    # every member (serializable reads of each member's own state).
    writes = acked_writes(ops)
    for name in names:
        missing = await _missing_writes(c.members[name].endpoint, writes)
        assert not missing, (name, missing[:10])


async def _missing_writes(endpoint: str, writes: list[Op]) -> list[str]:
    sem = asyncio.Semaphore(32)
    async with Client([endpoint]) as cli:
        async def check(o: Op) -> str | None:
            async with sem:
                r = await cli.get(o.key, revision=o.revision or 0, serializable=True)
            got = r.kvs[0].value.decode() if r.kvs else None
            mod = r.kvs[0].mod_revision if r.kvs else 0
            if got != o.value or mod != o.revision:
                return f"{o.describe()} -> {got!r}@{mod}"
            return None
        return [m for m in await asyncio.gather(*(check(o) for o in writes)) if m]
