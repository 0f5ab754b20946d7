"""etcdctl watch, lock and elect (long-running etcdctl processes), etcd vs target.

Each long-running etcdctl is started in the case's ProcessGroup, polled through its
output files, and stopped with SIGINT (what a user's Ctrl-C sends); waits are bounded
polls on an observable condition, never fixed sleeps.
"""

from __future__ import annotations

import base64
import json
import signal
from typing import Any

import pytest

from tests.compat.harness import Case, Rev, Side, Var, on_coord
from tests.compat.known import steps
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.etcd

END_VALUE = "fin"


def end_marker(c: Case) -> str:
    return f"{c.p}zz-end\n{END_VALUE}\n"


def write_history(c: Case) -> None:
    c.ctl("put", c.p + "a", "1")  # R+1
    c.ctl("put", c.p + "b", "2")  # R+2
    c.ctl("put", c.p + "a", "3")  # R+3
    c.ctl("del", c.p + "a")  # R+4
    c.txn(f"\nput {c.p}c 5\nput {c.p}d 6\ndel {c.p}b\n\n\n")  # R+5: three events


def watch_until_marker(c: Case, args: list, *, marker_json: bool = False,
                       live: list[list[str]] | None = None) -> None:
    """Run ``etcdctl watch args`` on both servers, optionally doing ``live`` writes once
    the history has arrived, then write the end marker, wait for it, stop, record."""
    marker_key = c.p + "zz-end"
    b64 = base64.b64encode(marker_key.encode()).decode()

    def seen_marker(out: str) -> bool:
        if marker_json:
            return b64 in out and out.endswith("\n")
        return end_marker(c) in out

    def run(side: Side) -> None:
        w = side.spawn("watch", ["watch", *args])
        # Wait for the last history revision (R+5, key "d") before any further write:
        # otherwise whether a new write joins the catch-up response is a race (etcd
        # batches whatever it has when it syncs the watcher).
        d_key = c.p + "d"
        d_b64 = base64.b64encode(d_key.encode()).decode()
        hist = w.wait_output(
            lambda s: (d_b64 in s if marker_json else f"{d_key}\n6\n" in s)
            and s.endswith("\n"), "history", 10)
        side.transcript.append(f"# history delivered: {hist}")
        for cmd in live or []:
            side.ctl(cmd, record=False)
        side.ctl(["put", marker_key, END_VALUE], record=False)
        got = w.wait_output(seen_marker, "end marker", 10)
        rc = w.stop(signal.SIGINT)
        side.transcript.append(f"# end marker seen: {got}")
        w.record(rc)

    c.each(run)


def test_watch_history_prefix_rev(compat) -> None:
    with compat() as c:
        write_history(c)
        watch_until_marker(c, [c.p, "--prefix", "--rev", Rev(1)])


def test_watch_history_prev_kv(compat) -> None:
    with compat() as c:
        write_history(c)
        watch_until_marker(c, [c.p, "--prefix", "--rev", Rev(1), "--prev-kv"])


def test_watch_history_json(compat) -> None:
    with compat() as c:
        write_history(c)
        watch_until_marker(c, [c.p, "--prefix", "--rev", Rev(1), "-w", "json"],
                           marker_json=True)


def test_watch_history_then_live_events(compat) -> None:
    with compat() as c:
        write_history(c)
        live = [["put", c.p + "e", "live1"], ["put", c.p + "c", "live2"],
                ["del", c.p, "--prefix"]]
        watch_until_marker(c, [c.p, "--prefix", "--rev", Rev(1), "--prev-kv", "-w", "json"],
                           marker_json=True, live=live)


def test_watch_single_key_and_range(compat) -> None:
    with compat() as c:
        write_history(c)
        c.ctl("put", c.p + "zz-end", "early")  # the marker key itself, before the watch
        watch_until_marker(c, [c.p + "c", c.p + "zz-f", "--rev", Rev(2)])


def test_watch_future_revision(compat) -> None:
    with compat() as c:
        c.ctl("put", c.p + "a", "1")  # R+1

        def run(side: Side) -> None:
            w = side.spawn("watch", ["watch", c.p, "--prefix", "--rev", Rev(3)])
            side.ctl(["put", c.p + "a", "2"], record=False)  # R+2: before the start revision
            side.ctl(["put", c.p + "a", "3"], record=False)  # R+3: first event delivered
            side.ctl(["put", c.p + "zz-end", END_VALUE], record=False)
            got = w.wait_output(lambda s: end_marker(c) in s, "end marker", 10)
            side.transcript.append(f"# end marker seen: {got}")
            w.record(w.stop())

        c.each(run)


def test_watch_live_from_now(compat) -> None:
    """No --rev: the watch starts "now". A sentinel key is written until the watch shows
    it (so the watch is known to be established); output before it is not compared."""
    with compat() as c:
        c.ctl("put", c.p + "before", "not-seen")

        def run(side: Side) -> None:
            w = side.spawn("watch", ["watch", c.p, "--prefix", "--prev-kv"])
            offset = -1
            for i in range(100):
                side.ctl(["put", c.p + "0-sentinel", f"s{i}"], record=False)
                token = f"{c.p}0-sentinel\ns{i}\n"
                if w.wait_output(lambda s, t=token: t in s, "sentinel", 0.3):
                    out = w.stdout()
                    offset = out.index(token) + len(token)
                    break
            side.transcript.append(f"# watch established: {offset >= 0}")
            for cmd in (["put", c.p + "x", "1"], ["put", c.p + "x", "2"], ["del", c.p + "x"],
                        ["put", c.p + "before", "now-seen"]):
                side.ctl(cmd, record=False)
            side.ctl(["put", c.p + "zz-end", END_VALUE], record=False)
            got = w.wait_output(lambda s: end_marker(c) in s, "end marker", 10)
            rc = w.stop()
            side.transcript.append(f"# end marker seen: {got}")
            w.record(rc, stdout=w.stdout()[max(offset, 0):])

        c.each(run)


def test_watch_interactive_progress(compat) -> None:
    """``watch -i``: commands on stdin; ``progress`` asks for a progress notification,
    printed as "progress notify: <revision>"."""
    with compat() as c:
        c.ctl("put", c.p + "k1", "a")  # R+1

        def run(side: Side) -> None:
            w = side.spawn("watchi", ["watch", "-i"],
                           stdin_text=f"watch {c.p}k1\nprogress\n")
            got = w.wait_output(lambda s: "progress notify:" in s and s.endswith("\n"),
                                "progress notify", 10)
            side.transcript.append(f"# progress notify seen: {got}")
            side.ctl(["put", c.p + "k1", END_VALUE], record=False)  # R+2
            got = w.wait_output(lambda s: f"{c.p}k1\n{END_VALUE}\n" in s, "event", 10)
            side.transcript.append(f"# live event seen: {got}")
            # SIGKILL: with SIGINT the stdin feeder may die first and etcdctl may still
            # print "Error reading watch request line: EOF" (a teardown race)
            w.record(w.stop(signal.SIGKILL))

        c.each(run)


def test_watch_compacted_revision(compat) -> None:
    with compat() as c:
        c.ctl("put", c.p + "k", "v1")  # R+1
        c.ctl("put", c.p + "k", "v2")  # R+2
        c.ctl("put", c.p + "k", "v3")  # R+3
        c.ctl("compaction", Rev(3))
        c.each(lambda side: side.ctl(["watch", c.p + "k", "--rev", Rev(1)], timeout=10))
        c.each(lambda side: side.ctl(["watch", c.p, "--prefix", "--rev", Rev(2), "-w", "json"],
                                     timeout=10))


def _watch_events(out: str) -> list[dict[str, Any]]:
    """The JSON responses in a recorded ``etcdctl watch -w json`` output."""
    return [json.loads(line) for line in (raw.strip() for raw in out.splitlines())
            if line.startswith("{")]


def test_watch_at_compaction_revision_of_a_delete(compat) -> None:
    """Watch opened exactly at a compaction revision that is a delete (etcd issue
    #19179 territory) and at the revision before it (compacted).

    FINDINGS F7, a deliberate difference: coord's watch delivers the DELETE of ``k`` at
    the compaction revision, which etcd 3.4 drops (its bug #19179); every other answer
    is etcd's. Against a second etcd the transcripts are equal."""
    c = compat()
    try:
        c.ctl("put", c.p + "k", "v1")  # R+1
        c.ctl("put", c.p + "j", "v1")  # R+2
        c.ctl("del", c.p + "k")  # R+3
        c.ctl("put", c.p + "j", "v2")  # R+4
        c.ctl("compaction", Rev(3), "--physical")  # physical: etcd's backend is compacted
        c.ctl("get", c.p, "--prefix", "--rev", Rev(3), "-w", "json")
        c.ctl("get", c.p + "k", "--rev", Rev(3))

        def run(side: Side) -> None:
            w = side.spawn("watch", ["watch", c.p, "--prefix", "--rev", Rev(3), "-w", "json"])
            j = base64.b64encode(f"{c.p}j".encode()).decode()
            hist = w.wait_output(lambda s: j in s and s.endswith("\n"), "history", 10)
            side.transcript.append(f"# history delivered: {hist}")
            side.ctl(["put", c.p + "zz-end", END_VALUE], record=False)
            marker = base64.b64encode(f"{c.p}zz-end".encode()).decode()
            got = w.wait_output(lambda s: marker in s and s.endswith("\n"), "marker", 10)
            side.transcript.append(f"# end marker seen: {got}")
            w.record(w.stop())

        c.each(run)
    finally:
        c.close()
    if not on_coord():
        c.check()
        return
    ref, coord = (steps(t) for t in c.transcripts())
    differ = [r[0] for r, t in zip(ref, coord, strict=True) if r != t]
    watch = f"$ etcdctl watch {c.p} --prefix --rev R+3 -w json"
    assert len(differ) == 1 and differ[0].startswith(watch), (
        f"F7: only the watch at R+3 may differ, not {differ}\n{c.transcripts()[1]}")
    ref_out, coord_out = (dict(t)[differ[0]] for t in (ref, coord))
    deleted_k = {"type": 1, "kv": {"key": base64.b64encode(f"{c.p}k".encode()).decode(),
                                   "mod_revision": "R+3"}}
    got = _watch_events(coord_out)
    seen_deletes = [e for resp in got for e in resp.get("Events", []) if e.get("type") == 1]
    assert seen_deletes == [deleted_k], f"F7: coord must deliver k's DELETE once: {got}"
    for resp in got:
        resp["Events"] = [e for e in resp.get("Events", []) if e.get("type") != 1]
    assert got == _watch_events(ref_out), "F7: besides the DELETE, coord's watch is etcd's"


def lock_holders(side: Side, name: str) -> int:
    r = side.ctl(["get", name, "--prefix", "--keys-only", "-w", "json"], record=False)
    try:
        return int(json.loads(r.stdout).get("count", 0))
    except ValueError:
        return -1


def test_lock_contention_and_release(compat) -> None:
    with compat() as c:
        name = c.p + "L"
        c.id_after(name)

        def run(side: Side) -> None:
            holder = side.spawn("holder", ["lock", name])
            side.transcript.append(f"# holder acquired: {holder.wait_lines(1)}")
            waiter = side.spawn("waiter", ["lock", name, "--", "sh", "-c",
                                           'echo "acquired $ETCD_LOCK_KEY"'])
            try:
                wait_until(lambda: lock_holders(side, name) >= 2, 10, "waiter's key")
                queued = True
            except TimeoutError:
                queued = False
            side.transcript.append(f"# waiter queued behind holder: {queued}")
            side.transcript.append(f"# waiter still blocked: {waiter.proc.alive()}")
            side.transcript.append(f"# waiter output while blocked: {waiter.stdout()!r}")
            side.ctl(["get", name, "--prefix", "--keys-only", "--sort-by=CREATE"])
            holder.record(holder.stop(signal.SIGINT))
            waiter.record(waiter.wait_exit(8))
            side.ctl(["get", name, "--prefix", "-w", "json"])

        c.each(run)


def test_lock_holder_killed_lease_expires(compat) -> None:
    """Deadman: the holder is kill -9'd (no release); its session lease (--ttl=2) expires
    and the waiter gets the lock."""
    with compat() as c:
        name = c.p + "L"
        c.id_after(name)

        def run(side: Side) -> None:
            holder = side.spawn("holder", ["lock", "--ttl=2", name])
            side.transcript.append(f"# holder acquired: {holder.wait_lines(1)}")
            waiter = side.spawn("waiter", ["lock", "--ttl=2", name, "--", "sh", "-c",
                                           'echo "acquired $ETCD_LOCK_KEY"'])
            try:
                wait_until(lambda: lock_holders(side, name) >= 2, 8, "waiter's key")
                queued = True
            except TimeoutError:
                queued = False
            side.transcript.append(f"# waiter queued behind holder: {queued}")
            holder.proc.kill9()
            side.transcript.append("# holder killed with SIGKILL")
            holder.record(None)
            waiter.record(waiter.wait_exit(15))
            side.ctl(["get", name, "--prefix", "-w", "json"])

        c.each(run)


def test_lock_fifo_queue_of_three(compat) -> None:
    """Waiters get the lock in the order they queued (by create revision)."""
    with compat() as c:
        name = c.p + "L"
        c.id_after(name)

        def run(side: Side) -> None:
            holders = []
            for i in range(3):
                h = side.spawn(f"h{i}", ["lock", name])
                holders.append(h)
                if i == 0:
                    side.transcript.append(f"# h0 acquired: {h.wait_lines(1)}")
                else:
                    try:
                        wait_until(lambda n=i + 1: lock_holders(side, name) >= n, 8,
                                   f"h{i} queued")
                        queued = True
                    except TimeoutError:
                        queued = False
                    side.transcript.append(f"# h{i} queued: {queued}")
            for i in range(3):
                waiting = [f"h{j}:{holders[j].stdout() == ''}" for j in range(i + 1, 3)]
                side.transcript.append(f"# h{i} holds; still waiting: {' '.join(waiting)}")
                holders[i].record(holders[i].stop(signal.SIGINT))
                if i + 1 < 3:
                    side.transcript.append(
                        f"# h{i + 1} acquired: {holders[i + 1].wait_lines(1, 8)}")
            side.ctl(["get", name, "--prefix", "-w", "json"])

        c.each(run)


def test_lock_exec_command(compat) -> None:
    with compat() as c:
        c.id_after(c.p + "L")
        c.ctl("lock", c.p + "L", "--", "sh", "-c", 'echo "got $ETCD_LOCK_KEY"; exit 3')
        c.ctl("get", c.p + "L", "--prefix")


def test_elect_and_observe(compat) -> None:
    with compat() as c:
        name = c.p + "E"
        c.id_after(name)

        def run(side: Side) -> None:
            leader = side.spawn("leader", ["elect", name, "proposal-1"])
            side.transcript.append(f"# leader elected: {leader.wait_lines(2)}")
            observer = side.spawn("observer", ["elect", "-l", name])
            side.transcript.append(f"# observer saw leader: {observer.wait_lines(2)}")
            side.ctl(["get", name, "--prefix"])
            leader.record(leader.stop(signal.SIGINT))
            observer.record(observer.stop(signal.SIGINT))
            side.ctl(["get", name, "--prefix"])

        c.each(run)


def test_watch_lease_revoke_deletes(compat) -> None:
    """Revoking a lease deletes its keys in one revision, in key order."""
    with compat() as c:
        r = c.ctl("lease", "grant", "60")
        c.capture(r, r"lease ([0-9a-f]+) granted", "L")
        for k in ("c", "a", "b"):
            c.ctl("put", c.p + k, k, "--lease", Var("L"))
        c.ctl("lease", "revoke", Var("L"))  # R+4
        c.ctl("put", c.p + "d", "6")  # R+5, the "history done" key of watch_until_marker
        watch_until_marker(c, [c.p, "--prefix", "--rev", Rev(1), "--prev-kv", "-w", "json"],
                           marker_json=True)


def test_watch_prev_kv_after_compaction(compat) -> None:
    """prev_kv is left out when the previous revision has been compacted away."""
    with compat() as c:
        write_history(c)  # R+1..R+5
        c.ctl("compaction", Rev(3), "--physical")  # etcd compacts its backend in background
        watch_until_marker(c, [c.p, "--prefix", "--rev", Rev(3), "--prev-kv", "-w", "json"],
                           marker_json=True)


def test_elect_failover_to_second_candidate(compat) -> None:
    with compat() as c:
        name = c.p + "E"
        c.id_after(name)

        def run(side: Side) -> None:
            first = side.spawn("first", ["elect", name, "p1"])
            side.transcript.append(f"# first elected: {first.wait_lines(2)}")
            observer = side.spawn("observer", ["elect", "-l", name])
            side.transcript.append(f"# observer saw p1: {observer.wait_lines(2)}")
            second = side.spawn("second", ["elect", name, "p2"])
            try:
                wait_until(lambda: lock_holders(side, name) >= 2, 8, "second candidate's key")
                queued = True
            except TimeoutError:
                queued = False
            side.transcript.append(f"# second candidate queued: {queued}")
            side.transcript.append(f"# second not yet leader: {second.stdout() == ''}")
            first.record(first.stop(signal.SIGINT))
            side.transcript.append(f"# second elected: {second.wait_lines(2, 8)}")
            side.transcript.append(f"# observer saw p2: {observer.wait_lines(4, 8)}")
            observer.record(observer.stop(signal.SIGINT))
            side.ctl(["get", name, "--prefix"])
            second.record(second.stop(signal.SIGINT))
            side.ctl(["get", name, "--prefix", "-w", "json"])

        c.each(run)
