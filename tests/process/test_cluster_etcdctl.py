"""etcdctl through a follower's client port: a 3-member coord cluster and a 3-member real
etcd answer the same commands with the same output (ids, ports and timings masked).

The full differential suite (tests/compat/) runs against single members; this is the
cluster subset: KV, txn, leases, lock, compaction, member list, endpoint health/status.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess

import pytest

from tests.helpers.procs import ProcessGroup
from tests.process.cluster import CoordCluster, start_etcd_members

pytestmark = pytest.mark.timeout(120)

_MASKS = [
    (re.compile(r"\b[0-9a-f]{14,16}\b"), "<id>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
    (re.compile(r"took = [0-9.]+[µm]?s"), "took = <t>"),
    (re.compile(r"\b(n|e)([123])\b"), r"m\2"),
    (re.compile(r'"(ClusterID|MemberID)" : \d+'), r'"\1" : <id>'),
]


def _mask(text: str, ids: dict[str, str]) -> str:
    for real, alias in ids.items():
        text = text.replace(real, alias)
    for rx, rep in _MASKS:
        text = rx.sub(rep, text)
    return text


def _run(etcdctl_bin: str, ep: str, args: list[str], stdin: str | None = None) -> tuple[int, str]:
    res = subprocess.run([etcdctl_bin, f"--endpoints={ep}", "--command-timeout=5s", *args],
                         input=stdin, capture_output=True, text=True, timeout=30,
                         env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}, check=False)
    err = "\n".join(ln for ln in res.stderr.splitlines() if ln.startswith("Error"))
    return res.returncode, res.stdout + err


def _script(etcdctl_bin: str, ep: str) -> list[tuple[str, int, str]]:
    out: list[tuple[str, int, str]] = []
    ids: dict[str, str] = {}

    def ctl(*args: str, stdin: str | None = None) -> str:
        code, text = _run(etcdctl_bin, ep, list(args), stdin)
        masked = _mask(text, ids)
        if args[:2] == ("member", "list"):  # ordered by member id, which differs
            masked = "\n".join(sorted(masked.splitlines()))
        out.append((_mask(" ".join(args), ids), code, masked))
        return text

    ctl("put", "a", "1")
    ctl("put", "b", "2")
    ctl("get", "a", "c")
    ctl("get", "", "--prefix", "--keys-only")
    ctl("get", "a", "-w", "fields")
    ctl("del", "a")
    ctl("txn", stdin='value("b") = "2"\n\nput b 3\n\nput b 4\n\n')
    ctl("get", "b", "--print-value-only")
    granted = ctl("lease", "grant", "100")
    m = re.search(r"lease ([0-9a-f]+) granted", granted)
    assert m, granted
    ids[m.group(1)] = "<lease>"
    ctl("put", "c", "1", f"--lease={m.group(1)}")
    ctl("lease", "timetolive", m.group(1), "--keys")
    ctl("lease", "keep-alive", "--once", m.group(1))
    ctl("lease", "list")
    ctl("lease", "revoke", m.group(1))
    ctl("get", "c")
    ctl("lock", "mylock", "echo", "locked")
    ctl("get", "", "--prefix", "--keys-only", "--consistency=s")
    ctl("compaction", "3")
    ctl("get", "b", "--rev=2")
    ctl("member", "list")
    ctl("endpoint", "health")
    ctl("put", "", "x")
    ctl("lease", "revoke", "1234")
    return out


def test_etcdctl_through_a_follower(procs: ProcessGroup, etcd_bin: str,
                                    etcdctl_bin: str) -> None:
    coord = CoordCluster(procs, size=3, faults=False)
    coord.start()
    lead = asyncio.run(coord.wait_leader())
    coord_ep = next(m.endpoint for n, m in coord.members.items() if n != lead)
    etcd = start_etcd_members(procs, 3, etcd_bin)
    status = json.loads(subprocess.run(
        [etcdctl_bin, "--endpoints=" + ",".join(m.endpoint for m in etcd.values()),
         "endpoint", "status", "-w", "json"], capture_output=True, text=True, check=True,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}, timeout=30).stdout)
    etcd_ep = next(s["Endpoint"] for s in status
                   if s["Status"]["leader"] != s["Status"]["header"]["member_id"])
    want = _script(etcdctl_bin, etcd_ep)
    got = _script(etcdctl_bin, coord_ep)
    diffs = [f"$ etcdctl {w[0]}\n  etcd : {w[1:]!r}\n  coord: {g[1:]!r}"
             for w, g in zip(want, got, strict=True) if w != g]
    assert not diffs, "\n".join(diffs)
