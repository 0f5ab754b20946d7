"""Auth state is replicated state: it survives kill -9 of every member of a 3-member
cluster (recovery from snapshot + WAL), and a member that was down while users and
permissions changed gets them from the leader's snapshot. Driven with the real etcdctl."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers.procs import ProcessGroup
from tests.process.cluster import CoordCluster

pytestmark = pytest.mark.timeout(180)

ROOT = "--user=root:rootpw"
ALICE = "--user=alice:apw"


def ctl(bin_: str, endpoint: str, *args: str) -> tuple[int, str]:
    res = subprocess.run([bin_, f"--endpoints={endpoint}", "--command-timeout=5s", *args],
                         capture_output=True, text=True, timeout=30, check=False,
                         env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
    err = "\n".join(ln for ln in res.stderr.splitlines() if ln.startswith("Error"))
    return res.returncode, res.stdout + err


def ok(bin_: str, endpoint: str, *args: str) -> str:
    code, out = ctl(bin_, endpoint, *args)
    assert code == 0, (args, out)
    return out


def assert_enforced(bin_: str, endpoint: str) -> None:
    """What a member answers with auth on: alice reads and writes ``app/`` only."""
    assert ctl(bin_, endpoint, "get", "app/k") == (1, "Error: etcdserver: user name is empty")
    assert ctl(bin_, endpoint, ALICE, "get", "app/k") == (0, "app/k\nv1\n")
    assert ctl(bin_, endpoint, ALICE, "put", "pub/x", "1") == (
        1, "Error: etcdserver: permission denied")
    assert ctl(bin_, endpoint, "--user=alice:wrong", "get", "app/k") == (
        2, "Error: etcdserver: authentication failed, invalid user ID or password")
    assert ctl(bin_, endpoint, ROOT, "user", "list") == (0, "alice\nroot\n")


def test_auth_survives_kill9_of_every_member_and_snapshot_install(
        procs: ProcessGroup, etcdctl_bin: str) -> None:
    cluster = CoordCluster(procs, size=3, snapshot_count=20, faults=False)
    cluster.start()
    eps = ",".join(cluster.endpoints)

    async def leader() -> None:
        await cluster.wait_leader()

    cluster.run(lambda c: leader())
    ok(etcdctl_bin, eps, "user", "add", "root", "--new-user-password=rootpw")
    ok(etcdctl_bin, eps, "user", "add", "alice", "--new-user-password=apw")
    ok(etcdctl_bin, eps, "role", "add", "app")
    ok(etcdctl_bin, eps, "role", "grant-permission", "--prefix=true", "app", "readwrite", "app/")
    ok(etcdctl_bin, eps, "user", "grant-role", "alice", "app")
    ok(etcdctl_bin, eps, "auth", "enable")
    ok(etcdctl_bin, eps, ALICE, "put", "app/k", "v1")
    for i in range(30):  # past --snapshot-count: every member snapshots the auth state
        ok(etcdctl_bin, eps, ROOT, "put", f"fill/{i}", "x")

    for name in cluster.members:
        cluster.kill9(name)
    cluster.start()
    cluster.run(lambda c: leader())
    for m in cluster.members.values():
        assert list(m.data.rglob("*.snap")), f"{m.name} took no snapshot"
        assert_enforced(etcdctl_bin, m.endpoint)

    # n3 misses a permission change and more entries than the others keep: it catches up
    # from the leader's snapshot, and enforces the new permission at once.
    cluster.kill9("n3")
    live = ",".join(cluster.members[n].endpoint for n in ("n1", "n2"))
    ok(etcdctl_bin, live, ROOT, "role", "grant-permission", "--prefix=true", "app", "read",
       "pub/")
    ok(etcdctl_bin, live, ROOT, "put", "pub/x", "p")
    for i in range(30):
        ok(etcdctl_bin, live, ROOT, "put", f"fill/{i}", "y")
    cluster.start("n3")

    async def caught_up() -> None:
        await cluster.wait_caught_up()

    cluster.run(lambda c: caught_up())
    n3_proc = cluster.members["n3"].proc
    assert n3_proc is not None and "raftnode.snapshot_installed" in n3_proc.log()
    n3 = cluster.members["n3"].endpoint
    assert ctl(etcdctl_bin, n3, ALICE, "get", "pub/x", "--consistency=s") == (0, "pub/x\np\n")
    assert ctl(etcdctl_bin, n3, ALICE, "put", "pub/x", "2") == (
        1, "Error: etcdserver: permission denied")
    assert ctl(etcdctl_bin, n3, "get", "pub/x", "--consistency=s") == (
        1, "Error: etcdserver: user name is empty")
