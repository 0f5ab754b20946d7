"""The partition test with auth on: a 3-member coord cluster with auth enabled, recorded
load from clients logged in as a user with readwrite on the load's prefix, the leader
isolated from both followers, then healed. The history passes the linearizability
checker, every acknowledged write is on every member, and no operation was refused for
want of a token or a permission (a token made before the partition stays valid)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from coord.client import Client, ClientAuth, ServerError
from tests.helpers.history import Kind, Status
from tests.helpers.linearizability import check_history
from tests.helpers.procs import ProcessGroup
from tests.process import load as load_module
from tests.process.cluster import CoordCluster, await_until, etcdctl
from tests.process.load import Workload, acked_writes

pytestmark = pytest.mark.timeout(180)

ROOT = ClientAuth("root", "rootpw")
ALICE = ClientAuth("alice", "apw")
AUTH_ERRORS: list[str] = []
"""Every auth refusal a load client met (there must be none)."""


class AliceClient(Client):
    """The load's client: logged in as alice; records any auth error it meets."""

    def __init__(self, endpoints: Any, timeout: float = 5.0) -> None:
        super().__init__(endpoints, timeout=timeout, auth=ALICE)

    async def _call(self, fn: Any, *, idempotent: bool, timeout: float | None = None) -> Any:
        try:
            return await super()._call(fn, idempotent=idempotent, timeout=timeout)
        except ServerError as err:
            if any(w in err.message for w in ("permission denied", "user name is empty",
                                              "invalid auth token", "authentication")):
                AUTH_ERRORS.append(err.message)
            raise


def test_partition_with_auth_on_finds_no_anomaly(
        procs: ProcessGroup, etcdctl_bin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = CoordCluster(procs, size=3, snapshot_count=200)
    cluster.start()
    # The load's clients log in as alice.
    monkeypatch.setattr(load_module, "Client", AliceClient)
    cluster.run(lambda c: _scenario(c, etcdctl_bin))


async def _scenario(c: CoordCluster, ctl: str) -> None:
    leader = await c.wait_leader()
    for args in (["user", "add", "root:rootpw"], ["user", "add", "alice:apw"],
                 ["role", "add", "lin"],
                 ["role", "grant-permission", "--prefix=true", "lin", "readwrite", "/lin/"],
                 ["user", "grant-role", "alice", "lin"], ["auth", "enable"]):
        res = etcdctl(ctl, c.endpoints, *args)
        assert res.returncode == 0, (args, res.stderr)
    names = list(c.members)
    eps = {n: c.members[n].endpoint for n in names}
    endpoints = {i: [eps[names[(i + k) % 3]] for k in range(3)] for i in range(3)}
    async with Client(c.endpoints, auth=ROOT) as cli:
        base_rev = (await cli.get("/lin/", prefix=True)).header.revision
    load = Workload(endpoints)
    load.start()
    t0 = time.monotonic()

    async def some_history() -> bool:
        return load.first_write_after(t0) is not None
    await await_until(some_history, 20, "writes before the partition")

    leader = await c.wait_leader()
    others = [n for n in names if n != leader]
    t_cut = time.monotonic()
    await c.fault(leader, others)

    async def resumed() -> bool:
        return load.first_write_after(t_cut + 0.5) is not None
    await await_until(resumed, 30, "writes to resume after the isolation of the leader")
    await c.wait_leader(others)
    await c.fault(leader, [])
    await c.wait_caught_up(timeout=30)
    t_heal = time.monotonic()

    async def after_heal() -> bool:
        return load.first_write_after(t_heal) is not None
    await await_until(after_heal, 20, "writes after the heal")
    ops = await load.finish()

    ok = [o for o in ops if o.status is Status.OK]
    assert len([o for o in ok if o.kind is not Kind.GET]) > 20, len(ok)
    assert not AUTH_ERRORS, AUTH_ERRORS[:5]
    result = check_history(ops, initial_revision=base_rev)
    assert result, result.report()
    writes = acked_writes(ops)
    for name in names:
        async with Client([eps[name]], auth=ROOT) as cli:
            for o in writes:
                r = await cli.get(o.key, revision=o.revision or 0, serializable=True)
                got = r.kvs[0].value.decode() if r.kvs else None
                assert got == o.value and r.kvs[0].mod_revision == o.revision, (
                    name, o.describe())
