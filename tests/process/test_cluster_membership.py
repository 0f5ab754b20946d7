"""Membership through the Cluster service (etcdctl member add/promote/remove), a member
rebuilt from an empty data dir catching up by snapshot, etcdctl through a follower."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys

import pytest

from coord.client import Client, UnavailableError
from tests.helpers.procs import REPO, ProcessGroup, free_port, wait_until
from tests.process.cluster import CoordCluster, Member, await_until, etcdctl

pytestmark = pytest.mark.timeout(180)


def _ctl(bin_: str, eps: list[str] | str, *args: str) -> str:
    res = etcdctl(bin_, eps, *args)
    assert res.returncode == 0, (args, res.stdout, res.stderr)
    return res.stdout


def test_one_leader_and_writes_through_every_member(procs: ProcessGroup, etcdctl_bin: str) -> None:
    c = CoordCluster(procs, size=3, faults=False)
    c.start()
    asyncio.run(c.wait_leader())
    status = json.loads(_ctl(etcdctl_bin, c.endpoints, "endpoint", "status", "-w", "json"))
    leaders = {s["Status"]["leader"] for s in status}
    assert len(leaders) == 1
    lead = leaders.pop()
    assert sum(s["Status"]["header"]["member_id"] == lead for s in status) == 1
    for i, ep in enumerate(c.endpoints):
        _ctl(etcdctl_bin, ep, "put", f"k{i}", f"v{i}")
    for ep in c.endpoints:
        out = _ctl(etcdctl_bin, ep, "get", "k", "--prefix", "--print-value-only")
        assert out.split() == ["v0", "v1", "v2"]
    # serializable reads too, once every member applied everything
    asyncio.run(c.wait_caught_up())
    for ep in c.endpoints:
        out = _ctl(etcdctl_bin, ep, "get", "k", "--prefix", "--consistency=s",
                   "--print-value-only")
        assert out.split() == ["v0", "v1", "v2"]
    # Each member publishes its client URL through the log once it knows a leader (as
    # etcd's publish): poll until all three have.
    want = sorted((n, [f"http://{m.endpoint}"]) for n, m in c.members.items())

    def published() -> list[tuple[str, list[str]]]:
        members = json.loads(_ctl(etcdctl_bin, c.endpoints[0], "member", "list", "-w", "json"))
        return sorted((m.get("name", ""), m.get("clientURLs", []))
                      for m in members["members"])
    wait_until(lambda: published() == want, 20, "every member's published client URL")
    # raftcron cluster status / members: one endpoint is enough, members are discovered
    cli = [sys.executable, "-m", "scheduler.cli", "cluster"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAFTCRON_ENDPOINTS": c.endpoints[1]}
    out = subprocess.run([*cli, "status", "-o", "json"], capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout
    rows = json.loads(out)
    assert sorted(r["name"] for r in rows) == ["n1", "n2", "n3"]
    assert sum(bool(r["leader"]) for r in rows) == 1
    assert len({r["applied_index"] for r in rows}) == 1
    out = subprocess.run([*cli, "members"], capture_output=True, text=True, env=env,
                         timeout=60, check=True).stdout
    assert all(n in out for n in ("n1", "n2", "n3")), out


def test_fault_rpc_is_off_by_default(procs: ProcessGroup) -> None:
    c = CoordCluster(procs, size=1, faults=False)
    c.start()
    import grpc

    with pytest.raises(grpc.aio.AioRpcError) as info:
        asyncio.run(c.fault("n1", ["n2"]))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_member_remove_and_add_online(procs: ProcessGroup, etcdctl_bin: str) -> None:
    c = CoordCluster(procs, size=3, faults=False)
    c.start()
    asyncio.run(_membership(c, etcdctl_bin))


async def _membership(c: CoordCluster, etcdctl_bin: str) -> None:
    await c.wait_leader()
    async with Client(c.endpoints) as cli:
        for i in range(20):
            await cli.put(f"/m/{i}", str(i))
    ids = c.ids()
    # remove n3 (through n1's client port)
    await c.wait_leader()
    _ctl(etcdctl_bin, c.members["n1"].endpoint, "member", "remove", f"{ids['n3']:x}")
    c.kill9("n3")
    del c.members["n3"]
    async with Client(c.endpoints) as cli:
        await _put(cli, "/m/after-remove", "x")
        assert len(await cli.members()) == 2
    # add n4 as a learner, start it with --initial-cluster-state existing, promote it
    n4 = Member("n4", free_port(), free_port(), c.group.workdir / "n4-data")
    c.members["n4"] = n4
    out = _ctl(etcdctl_bin, c.members["n1"].endpoint, "member", "add", "n4",
               f"--peer-urls=http://{n4.peer}", "--learner")
    assert "added" in out.lower(), out
    c.spawn("n4", state="existing", initial_cluster=c.initial_cluster)
    c.wait_listening("n4")
    await c.wait_caught_up(timeout=30)
    st4, st1 = await c.status("n4"), await c.status("n1")
    assert st4 is not None and st1 is not None
    assert st4.header.cluster_id == st1.header.cluster_id
    n4_id = c.ids()["n4"]

    async def promoted() -> bool:
        res = etcdctl(etcdctl_bin, c.endpoints[:2], "member", "promote", f"{n4_id:x}")
        return res.returncode == 0
    await await_until(promoted, 20, "n4 to be promoted")
    async with Client([n4.endpoint]) as cli:
        await _put(cli, "/m/after-add", "y")
        got = await cli.get("/m/", prefix=True)
        assert got.count == 22

        async def published() -> bool:
            members = await cli.members()
            return (sorted(m.name for m in members) == ["n1", "n2", "n4"]
                    and not any(m.is_learner for m in members))
        await await_until(published, 10, "n4 to publish its name as a voter")
    # the 3 voters tolerate the loss of one: kill n1, write through n4
    c.kill9("n1")
    async with Client([n4.endpoint, c.members["n2"].endpoint], timeout=10) as cli:
        await _put(cli, "/m/after-kill", "z")


async def _put(cli: Client, key: str, value: str) -> None:
    """Put, retrying while a leader change makes the outcome unknown (puts are idempotent
    here)."""
    for attempt in range(50):
        try:
            await cli.put(key, value)
            return
        except UnavailableError:
            if attempt == 49:
                raise
            await asyncio.sleep(0.1)


def test_empty_data_dir_catches_up_by_snapshot(procs: ProcessGroup, etcdctl_bin: str) -> None:
    """etcd's procedure for a member that lost its disk: remove it, add it back (a new
    member id: the id follows the peer URL) and start it over an empty data dir with
    --initial-cluster-state existing. The leader's log is compacted by then, so the new
    member can only catch up by snapshot."""
    c = CoordCluster(procs, size=3, snapshot_count=50, faults=False)
    c.start()
    asyncio.run(_snapshot_catch_up(c, etcdctl_bin))


async def _snapshot_catch_up(c: CoordCluster, etcdctl_bin: str) -> None:
    await c.wait_leader()
    ids = c.ids()
    c.kill9("n3")
    shutil.rmtree(c.members["n3"].data)
    await c.wait_leader(["n1", "n2"])
    _ctl(etcdctl_bin, c.endpoints[:2], "member", "remove", f"{ids['n3']:x}")
    async with Client(c.endpoints[:2]) as cli:
        # more than snapshot_count + the entries kept for catch-up (1000): compacted
        for i in range(0, 1300, 50):
            await asyncio.gather(*(cli.put(f"/s/{j}", str(j)) for j in range(i, i + 50)))
    n3 = c.members["n3"]
    n3.pport = free_port()
    _ctl(etcdctl_bin, c.endpoints[:2], "member", "add", "n3", f"--peer-urls=http://{n3.peer}")
    c.spawn("n3", state="existing")
    c.wait_listening("n3")
    await c.wait_caught_up(timeout=30)
    assert n3.proc is not None
    assert "raftnode.snapshot_installed" in n3.proc.log()
    # The snapshot n3 installed was built incrementally from the previous ones (only the
    # revisions since each was serialised): n3's state must be the leader's, record for record.
    async with Client([c.members["n1"].endpoint]) as cli:
        want = await cli.get("/s/", prefix=True, serializable=True)
    async with Client([n3.endpoint]) as cli:
        got = await cli.get("/s/", prefix=True, serializable=True)
        assert len(got.kvs) == 1300
        assert [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version)
                for kv in got.kvs] == [
            (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version)
            for kv in want.kvs]
        await _put(cli, "/s/after", "x")


def test_five_members_survive_two_failures_and_move_leader(procs: ProcessGroup,
                                                           etcdctl_bin: str) -> None:
    c = CoordCluster(procs, size=5, faults=False)
    c.start()
    asyncio.run(_five(c, etcdctl_bin))


async def _five(c: CoordCluster, etcdctl_bin: str) -> None:
    leader = await c.wait_leader()
    ids = c.ids()
    target = next(n for n in c.members if n != leader)
    out = _ctl(etcdctl_bin, c.endpoints, "move-leader", f"{ids[target]:x}")
    assert "transferred" in out, out
    assert await c.wait_leader() == target
    # a follower and then the leader die: 3 of 5 remain, still a quorum
    victim = next(n for n in c.members if n not in (leader, target))
    c.kill9(victim)
    c.kill9(target)
    alive = [n for n in c.members if n not in (victim, target)]
    await c.wait_leader(alive)
    async with Client([c.members[n].endpoint for n in alive], timeout=10) as cli:
        await _put(cli, "/five/k", "v")
        assert (await cli.get("/five/k")).kvs[0].value == b"v"
