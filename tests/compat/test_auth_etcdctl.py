"""etcdctl's user, role and auth commands, then reads and writes as users with different
permissions (allowed and denied), on a real etcd and on coord side by side: the same
outputs and exit codes at every step (issue #17, FINDINGS F8 fixed)."""

from __future__ import annotations

import json
import signal

import pytest

from tests.compat.harness import Case, Pair, Side, Var

pytestmark = pytest.mark.etcd

ROOT = "--user=root:rootpw"
ALICE = "--user=alice:apw"
BOB = "--user=bob:bpw"
GRANTED = r"lease ([0-9a-f]+) granted"


def _setup(c: Case) -> None:
    """Users, roles and permissions while auth is off, with every refusal etcd gives."""
    c.ctl("put", "pub/k", "v0")
    c.ctl("user", "add", "root", "--new-user-password=rootpw")
    c.ctl("user", "add", "root", "--new-user-password=other")  # exists
    c.ctl("user", "add", "alice", "--new-user-password=apw")
    c.ctl("user", "add", "bob", "--new-user-password=bpw")
    c.ctl("user", "add", "carol", "--no-password")
    c.ctl("role", "add", "app")
    c.ctl("role", "add", "app")  # exists
    c.ctl("role", "add", "ro")
    c.ctl("role", "grant-permission", "--prefix=true", "app", "readwrite", "app/")
    c.ctl("role", "grant-permission", "app", "read", "cfg")
    c.ctl("role", "grant-permission", "app", "write", "cfg")  # updates the type in place
    c.ctl("role", "grant-permission", "app", "read", "cfg")
    c.ctl("role", "grant-permission", "ro", "read", "app/", "app0")
    c.ctl("role", "grant-permission", "ro", "read", "z", "a")  # empty range
    c.ctl("role", "grant-permission", "nope", "read", "x")
    c.ctl("role", "get", "app")
    c.ctl("role", "get", "nope")
    c.ctl("user", "grant-role", "alice", "app")
    c.ctl("user", "grant-role", "alice", "app")  # granted already: a no-op
    c.ctl("user", "grant-role", "bob", "ro")
    c.ctl("user", "grant-role", "bob", "nope")
    c.ctl("user", "grant-role", "nobody", "ro")
    c.ctl("user", "get", "alice")
    c.ctl("user", "get", "nobody")
    c.ctl("user", "list")
    c.ctl("role", "list")


def _as_users(c: Case) -> None:
    c.ctl("get", "pub/k")  # no credentials
    c.ctl("--user=root:wrong", "get", "pub/k")
    c.ctl("--user=nobody:x", "get", "pub/k")
    c.ctl("--user=carol:x", "get", "pub/k")  # a user without password cannot log in
    c.ctl(ROOT, "get", "pub/k")
    c.ctl(ALICE, "put", "app/1", "a")
    c.ctl(ALICE, "get", "app/1")
    c.ctl(ALICE, "put", "app/2", "b", "--prev-kv")
    c.ctl(ALICE, "get", "app/", "--prefix")
    c.ctl(ALICE, "get", "app/1", "app/9")
    c.ctl(ALICE, "get", "app/", "--from-key")  # beyond the prefix
    c.ctl(ALICE, "put", "pub/k", "x")
    c.ctl(ALICE, "get", "pub/k")
    c.ctl(ALICE, "get", "cfg")  # read granted on the single key
    c.ctl(ALICE, "put", "cfg", "x")  # write was replaced by read
    c.ctl(ALICE, "del", "app/1")
    c.ctl(ALICE, "del", "app/", "--prefix", "--prev-kv")
    c.ctl(ALICE, "put", "app/2", "b")
    c.ctl(BOB, "get", "app/", "--prefix")  # [app/, app0) covers the prefix
    c.ctl(BOB, "get", "app/2", "-w", "json")
    c.ctl(BOB, "put", "app/3", "c")
    c.ctl(BOB, "del", "app/2")
    c.ctl(BOB, "get", "pub/k")
    c.txn('value("app/2") = "b"\n\nput app/3 c\n\nput pub/x y\n\n', ALICE)  # failure: denied
    c.txn('value("app/2") = "b"\n\nput app/3 c\n\nget app/2\n\n', ALICE)
    c.txn('value("pub/k") = "v0"\n\nput app/4 d\n\n\n', ALICE)  # compare: read denied
    c.txn('value("app/2") = "b"\n\nget app/3\n\n\n', BOB)
    c.ctl(ALICE, "user", "list")
    c.ctl(ALICE, "role", "add", "x")
    c.ctl(ALICE, "user", "get", "alice")
    c.ctl(ALICE, "auth", "disable")
    c.ctl(ALICE, "defrag")
    c.ctl(ALICE, "member", "list", "-w", "fields")


def _leases_and_admin(c: Case) -> None:
    """Leases: revoking needs write on every key attached; attaching a lease already on a
    key the user may not write is refused. Compaction and the root-only calls."""
    c.capture(c.ctl(ALICE, "lease", "grant", "60"), GRANTED, "L")
    c.ctl(ALICE, "put", "app/l", "1", "--lease", Var("L"))
    c.ctl(ALICE, "lease", "timetolive", Var("L"), "--keys")
    c.ctl(BOB, "lease", "timetolive", Var("L"), "--keys")
    c.ctl(BOB, "lease", "revoke", Var("L"))
    c.capture(c.ctl(ROOT, "lease", "grant", "60"), GRANTED, "L2")
    c.ctl(ROOT, "put", "pub/l", "1", "--lease", Var("L2"))
    c.ctl(ALICE, "put", "app/l2", "1", "--lease", Var("L2"))
    c.ctl(ALICE, "lease", "revoke", Var("L"))
    c.ctl(ALICE, "get", "app/l")
    c.ctl(ROOT, "lease", "revoke", Var("L2"))
    c.ctl(BOB, "compaction", "2")
    c.ctl("compaction", "2")
    c.ctl(ALICE, "endpoint", "hashkv")
    c.ctl("defrag")
    c.ctl(ALICE, "member", "add", "x", "--peer-urls=http://127.0.0.1:1")
    c.ctl(ALICE, "member", "remove", "1234")
    c.ctl(ALICE, "move-leader", "1234")
    c.ctl(ALICE, "alarm", "list")


def _root_changes(c: Case) -> None:
    c.ctl(ROOT, "user", "list")
    c.ctl(ROOT, "role", "list")
    c.ctl(ROOT, "role", "get", "root")
    c.ctl(ROOT, "user", "get", "root")
    c.ctl(ROOT, "user", "delete", "root")
    c.ctl(ROOT, "role", "delete", "root")
    c.ctl(ROOT, "user", "revoke-role", "root", "root")
    c.ctl(ROOT, "role", "revoke-permission", "app", "nokey")
    c.ctl(ROOT, "role", "revoke-permission", "--prefix=true", "app", "app/")
    c.ctl(ALICE, "put", "app/4", "d")  # revoked: denied at once
    c.ctl(ROOT, "user", "revoke-role", "bob", "app")
    c.ctl(ROOT, "user", "revoke-role", "bob", "ro")
    c.ctl(BOB, "get", "app/2")
    c.ctl(ROOT, "user", "passwd", "alice", "--interactive=false", stdin=b"newpw\n")
    c.ctl(ALICE, "get", "cfg")  # the old password
    c.ctl("--user=alice:newpw", "get", "cfg")
    c.ctl(ROOT, "role", "delete", "app")
    c.ctl(ROOT, "user", "get", "alice")  # the deleted role is gone from its users
    c.ctl("--user=alice:newpw", "get", "cfg")
    c.ctl(ROOT, "user", "delete", "carol")
    c.ctl(ROOT, "user", "delete", "carol")
    c.ctl(ROOT, "auth", "enable")  # enabled already
    c.ctl(ROOT, "auth", "disable")
    c.ctl("get", "app/2")
    c.ctl("user", "list")
    c.ctl("role", "list")
    c.ctl("user", "revoke-role", "root", "root")  # allowed while disabled
    c.ctl("auth", "enable")  # etcdctl grants the root role again, then enables
    c.ctl("get", "app/2")
    c.ctl(ROOT, "auth", "disable")


def _watch_denied_and_allowed(c: Case) -> None:
    """A watch on a range the user may not read is refused at creation (the stream
    itself goes on); one it may read delivers events."""
    def run(side: Side) -> None:
        denied = side.spawn("wdenied", [ALICE, "watch", "pub/", "--prefix"])
        side.transcript.append(f"# denied watch ended: {denied.wait_exit(10) is not None}")
        denied.record(denied.proc.popen.returncode)
        put = side.ctl([ALICE, "put", "app/w", "1", "-w", "json"], record=False)
        side.vars["W"] = str(json.loads(put.out)["header"]["revision"])
        # From the put's revision: the event is in the watch's history, so whether it is
        # delivered does not hang on the watch being established before the put.
        ok = side.spawn("wok", [ALICE, "watch", "app/", "--prefix", "--rev", Var("W")])
        seen = ok.wait_output(lambda s: "app/w\n1\n" in s, "watched put", 10)
        side.transcript.append(f"# watched put seen: {seen}")
        ok.record(ok.stop(signal.SIGINT))

    c.each(run)


def test_auth_users_roles_permissions(fresh_pair: Pair) -> None:
    with fresh_pair.case("authflow") as c:
        _setup(c)
        c.ctl("auth", "enable")
        _as_users(c)
        _watch_denied_and_allowed(c)
        _leases_and_admin(c)
        _root_changes(c)
