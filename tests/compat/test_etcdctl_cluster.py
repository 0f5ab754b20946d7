"""etcdctl endpoint / member commands and whole-keyspace reads on fresh servers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.compat.harness import Pair, Side, Var, on_coord, wait_ready
from tests.compat.known import KnownDifference, expect_known
from tests.helpers.procs import REPO, free_port

pytestmark = pytest.mark.etcd


def test_endpoint_health(compat) -> None:
    with compat() as c:
        c.ctl("endpoint", "health")
        c.ctl("endpoint", "health", "-w", "json")


def test_endpoint_status_json(compat) -> None:
    with compat() as c:
        c.ctl("endpoint", "status", "-w", "json")
        c.ctl("endpoint", "status", "-w", "fields")


def test_member_list(compat) -> None:
    with compat() as c:
        c.ctl("member", "list")
        c.ctl("member", "list", "-w", "json")
        c.ctl("member", "list", "-w", "table")


def test_fresh_store_absolute_revisions_and_from_key(fresh_pair: Pair) -> None:
    """On fresh servers the absolute revisions must agree: a new store is at 1."""
    with fresh_pair.case("fresh", absolute=True) as c:
        c.ctl("get", "", "--from-key", "-w", "json")
        c.ctl("put", "b", "2")
        c.ctl("put", "a", "1")
        c.ctl("put", "c", "3")
        c.ctl("put", "d", "4")
        c.ctl("get", "", "--from-key")
        c.ctl("get", "", "--from-key", "-w", "json")
        c.ctl("get", "b", "--from-key", "--keys-only")
        c.ctl("get", "", "--from-key", "--limit=2", "-w", "json")
        c.ctl("del", "c", "--from-key", "--prev-kv")
        c.ctl("get", "", "--from-key", "-w", "json")
        c.ctl("del", "", "--from-key")
        c.ctl("get", "", "--from-key", "-w", "json")
        c.ctl("endpoint", "status", "-w", "json")

        def whole_history(side: Side) -> None:  # every key, from revision 1
            w = side.spawn("watch", ["watch", "", "--prefix", "--rev", "1", "-w", "json"])
            got = w.wait_output(lambda s: '"mod_revision":7' in s and s.endswith("\n"),
                                "the last revision", 10)
            side.transcript.append(f"# history up to revision 7 seen: {got}")
            w.record(w.stop())

        c.each(whole_history)


def sorted_rows(side: Side, args: list, title_args: list | None = None) -> None:
    """Run and record with the member rows sorted: member list is ordered by member id,
    and a new member's id is random, so its place relative to n1 is too."""
    r = side.ctl(args, record=False)
    text = r.stdout.decode()
    if text.lstrip().startswith("{"):
        doc = json.loads(text)
        norm = side.norm
        doc["members"] = sorted(doc.get("members", []),
                                key=lambda m: json.dumps(norm.tree(m), sort_keys=True))
        text = json.dumps(doc) + "\n"
    else:
        lines = text.split("\n")
        rows = [i for i, ln in enumerate(lines) if ", started," in ln or ", unstarted," in ln]
        for i, row in zip(rows, sorted((lines[i] for i in rows), key=side.norm.text),
                          strict=True):
            lines[i] = row
        text = "\n".join(lines)
    r.stdout = text.encode()
    side.record_result("etcdctl " + Side.show_args(title_args or args), r)


def test_member_learner_add_promote_remove_fresh(fresh_pair: Pair) -> None:
    """Membership on a single member: a learner can be added (it doesn't count for
    quorum), not promoted while it is not running (not in sync), and removed."""
    peer1 = free_port()  # never bound: the learner never starts
    with fresh_pair.case("learner") as c:
        r = c.ctl("member", "add", "n9", "--learner", f"--peer-urls=http://127.0.0.1:{peer1}")
        c.capture(r, r"Member +([0-9a-f]+) added", "L")
        c.each(lambda side: sorted_rows(side, ["member", "list"]))
        c.each(lambda side: sorted_rows(side, ["member", "list", "-w", "json"]))
        c.ctl("member", "add", "n8", "--learner",  # etcd 3.4 allows one learner
              f"--peer-urls=http://127.0.0.1:{peer1 + 1 if peer1 < 65000 else peer1 - 1}")
        c.ctl("member", "promote", Var("L"))
        c.ctl("member", "remove", Var("L"))
        c.ctl("member", "remove", Var("L"))  # again: not found
        c.ctl("member", "remove", "1234")
        c.each(lambda side: sorted_rows(side, ["member", "list"]))
        c.ctl("put", "still", "writable")


@pytest.mark.xfail(on_coord(), strict=True, raises=KnownDifference,
                   reason="coord: MemberUpdate (changing a member's peer URLs) "
                   "is not implemented yet (FINDINGS F11)")
def test_member_update_fresh(fresh_pair: Pair) -> None:
    peer1, peer2 = free_port(), free_port()  # never bound
    with fresh_pair.case("member-update") as c:
        r = c.ctl("member", "add", "n9", "--learner", f"--peer-urls=http://127.0.0.1:{peer1}")
        c.capture(r, r"Member +([0-9a-f]+) added", "L")
        c.ctl("member", "update", Var("L"), f"--peer-urls=http://127.0.0.1:{peer2}")
        c.each(lambda side: sorted_rows(side, ["member", "list", "-w", "json"]))
        c.ctl("member", "update", "1234", f"--peer-urls=http://127.0.0.1:{peer2}")
        c.ctl("member", "remove", Var("L"))
        c.ctl("put", "still", "writable")
        expect_known(c, "F11", "etcdctl member update", "member update is not supported")


def test_member_reconfiguration_errors_fresh(fresh_pair: Pair) -> None:
    """Refused reconfigurations leave a single member serving."""
    with fresh_pair.case("reconfig-errors") as c:
        r = c.ctl("member", "list")
        c.capture(r, r"^([0-9a-f]+),", "self")

        def add_dup(side: Side) -> None:  # n1's own peer URL
            r = side.ctl(["member", "add", "dup", "--learner",
                          f"--peer-urls=http://127.0.0.1:{side.server.peer_port}"], record=False)
            side.record_result("etcdctl member add dup --learner --peer-urls=<n1's peer URL>", r)

        c.each(add_dup)
        c.ctl("member", "promote", Var("self"))  # not a learner
        c.ctl("member", "promote", "1234")  # no such member
        c.ctl("member", "remove", Var("self"))  # the last voter
        c.ctl("member", "list")
        c.ctl("put", "still", "writable")


def restart(side: Side) -> str:
    """kill -9 the server, start it again on the same data dir, ports and flags."""
    old = side.server.proc
    old.kill9()
    env = {"ETCD_UNSUPPORTED_ARCH": ""} if "etcd" in Path(old.argv[0]).name else {
        "PYTHONPATH": str(REPO)}
    group = side.server_group
    assert group is not None
    side.server.proc = group.spawn(old.name, old.argv, old.client_port, env=env)
    try:
        wait_ready(side.server)
    except (RuntimeError, TimeoutError) as e:
        return f"restart failed: {e}"
    return "restarted"


def test_restart_after_kill9_fresh(fresh_pair: Pair) -> None:
    """Acknowledged writes, leases, compaction and ids survive kill -9 and a restart;
    revisions continue where they were."""
    with fresh_pair.case("restart", absolute=True) as c:
        for side, group in zip(c.sides, fresh_pair.groups, strict=True):
            side.server_group = group
        c.ctl("put", "a", "1")  # 2
        c.ctl("put", "b", "2")  # 3
        c.ctl("put", "a", "3")  # 4
        c.ctl("del", "b")  # 5
        r = c.ctl("lease", "grant", "100")
        c.capture(r, r"lease ([0-9a-f]+) granted", "L")
        c.ctl("put", "l", "v", "--lease", Var("L"))  # 6
        c.ctl("compaction", "3", "--physical")
        c.note("after kill -9", restart)
        c.ctl("get", "", "--from-key", "-w", "json")
        c.ctl("get", "a", "--rev", "2")  # compacted
        c.ctl("get", "a", "--rev", "3", "-w", "json")
        c.ctl("get", "a", "--rev", "4")
        c.ctl("lease", "list")

        def ttl(side: Side) -> None:
            r = side.ctl(["lease", "timetolive", Var("L"), "--keys"], record=False)
            # after a restart etcd renews every lease; only check that it is alive
            r.stdout = re.sub(rb"remaining\(\d+s\)", b"remaining(<alive>)", r.stdout)
            side.record_result("etcdctl lease timetolive $L --keys", r)

        c.each(ttl)
        c.ctl("member", "list", "-w", "json")
        c.ctl("put", "c", "4")  # 7
        c.ctl("get", "c", "-w", "json")

        def watch_history(side: Side) -> None:
            w = side.spawn("watch", ["watch", "a", "--rev", "4"])
            side.transcript.append(f"# history event seen: {w.wait_lines(3)}")
            w.record(w.stop())

        c.each(watch_history)
