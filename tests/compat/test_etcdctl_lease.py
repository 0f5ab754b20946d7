"""etcdctl lease commands, etcd vs target."""

from __future__ import annotations

import base64

import pytest

from tests.compat.harness import Pair, Rev, Side, Var
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.etcd

GRANTED = r"lease ([0-9a-f]+) granted"


def test_lease_grant_attach_timetolive(compat) -> None:
    with compat() as c:
        r = c.ctl("lease", "grant", "60")
        c.capture(r, GRANTED, "L")
        c.ctl("put", c.p + "a", "1", "--lease", Var("L"))
        c.ctl("put", c.p + "b", "2", "--lease", Var("L"))
        c.ctl("get", c.p + "a", "-w", "json")
        c.ctl("lease", "timetolive", Var("L"))
        c.ctl("lease", "timetolive", Var("L"), "--keys")
        c.ctl("lease", "timetolive", Var("L"), "--keys", "-w", "json")
        c.ctl("put", c.p + "b", "3")  # detaches b from the lease
        c.ctl("lease", "timetolive", Var("L"), "--keys")
        c.ctl("put", c.p + "c", "4", "--lease", Var("L"))
        c.ctl("del", c.p + "a")  # a deleted key leaves the lease too
        c.ctl("lease", "timetolive", Var("L"), "--keys", "-w", "json")
        c.ctl("lease", "revoke", Var("L"))


def test_lease_grant_json_and_min_ttl(compat) -> None:
    with compat() as c:
        r = c.ctl("lease", "grant", "1", "-w", "json")  # raised to the minimum TTL
        c.capture(r, r'"ID":(\d+)', "dec")
        c.each(lambda s: s.vars.__setitem__("L", f"{int(s.vars['dec']):x}"))
        c.ctl("lease", "timetolive", Var("L"), "-w", "json")
        c.ctl("lease", "revoke", Var("L"))


def test_lease_keep_alive_once(compat) -> None:
    with compat() as c:
        r = c.ctl("lease", "grant", "30")
        c.capture(r, GRANTED, "L")
        c.ctl("lease", "keep-alive", "--once", Var("L"))
        c.ctl("lease", "keep-alive", "--once", Var("L"), "-w", "json")
        c.ctl("lease", "revoke", Var("L"))


def test_lease_revoke_deletes_keys(compat) -> None:
    with compat() as c:
        r = c.ctl("lease", "grant", "60")
        c.capture(r, GRANTED, "L")
        for k in ("c", "a", "b"):
            c.ctl("put", c.p + k, k, "--lease", Var("L"))
        c.ctl("put", c.p + "keep", "x")
        c.ctl("lease", "revoke", Var("L"))
        c.ctl("get", c.p, "--prefix", "-w", "json")  # one revision for the three deletes
        c.ctl("lease", "timetolive", Var("L"))  # already expired
        c.ctl("lease", "timetolive", Var("L"), "-w", "json")


def test_lease_missing_errors(compat) -> None:
    with compat() as c:
        missing = "3a2b1c0d"
        c.ctl("lease", "revoke", missing)
        c.ctl("lease", "revoke", "0")
        c.ctl("lease", "timetolive", missing)
        c.ctl("lease", "timetolive", missing, "--keys", "-w", "json")
        c.ctl("lease", "keep-alive", "--once", missing)
        c.ctl("put", c.p + "k", "v", "--lease", missing)
        c.ctl("get", c.p + "k")


def test_lease_ttl_too_large(compat) -> None:
    with compat() as c:
        c.ctl("lease", "grant", "9000000001")


def test_lease_expiry_observed_via_get(compat) -> None:
    """A TTL=2 lease expires on its own; its keys disappear in one revision (bounded
    poll, no sleep), and a watcher sees the DELETE events."""
    with compat() as c:
        r = c.ctl("lease", "grant", "2")
        c.capture(r, GRANTED, "L")
        c.ctl("put", c.p + "k", "v", "--lease", Var("L"))
        c.ctl("put", c.p + "j", "v", "--lease", Var("L"))
        c.ctl("put", c.p + "other", "stays")
        c.ctl("get", c.p + "k")

        def wait_gone(side: Side) -> str:
            w = side.spawn("watch", ["watch", c.p, "--prefix", "--rev", Rev(1), "-w", "json"])

            def gone() -> bool:
                return side.ctl(["get", c.p + "k", "--keys-only"], record=False).out == ""

            try:
                wait_until(gone, 15, f"{side.server.label}: leased key to expire", step=0.1)
                result = "keys gone"
            except TimeoutError:
                result = "key still present after 15 s"
            side.ctl(["put", c.p + "zz-end", "fin"], record=False)
            marker = base64.b64encode(f"{c.p}zz-end".encode()).decode()
            w.wait_output(lambda s: marker in s and s.endswith("\n"), "end marker", 10)
            side.transcript.append(f"# expiry: {result}")
            w.record(w.stop())
            return result

        c.each(wait_gone)
        c.ctl("get", c.p, "--prefix", "-w", "json")  # exactly one revision for the expiry
        c.ctl("lease", "timetolive", Var("L"))


def test_lease_list_fresh(fresh_pair: Pair) -> None:
    with fresh_pair.case("lease-list") as c:
        c.ctl("lease", "list")
        c.ctl("lease", "list", "-w", "json")
        r1 = c.ctl("lease", "grant", "200")  # granted first, expires last
        c.capture(r1, GRANTED, "A")
        r2 = c.ctl("lease", "grant", "100")
        c.capture(r2, GRANTED, "B")
        c.ctl("lease", "grant", "150")
        c.ctl("lease", "list")
        c.ctl("lease", "list", "-w", "json")
        c.ctl("lease", "revoke", Var("A"))
        c.ctl("lease", "list")


def test_lease_keep_alive_stream_then_revoke(compat) -> None:
    """``lease keep-alive`` (a stream): first answer at once; after the lease is revoked
    the next keepalive (TTL/3 later) gets TTL 0 and etcdctl exits."""
    with compat() as c:
        r = c.ctl("lease", "grant", "6")
        c.capture(r, GRANTED, "L")

        def run(side: Side) -> None:
            ka = side.spawn("keepalive", ["lease", "keep-alive", Var("L")])
            side.transcript.append(f"# first keepalive answered: {ka.wait_lines(1)}")
            side.ctl(["lease", "revoke", Var("L")])
            rc = ka.wait_exit(10)
            if rc is None:
                rc = ka.stop()
                side.transcript.append("# keep-alive did not exit after the revoke")
            ka.record(rc)

        c.each(run)
