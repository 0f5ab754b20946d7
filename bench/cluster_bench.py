"""A 3-member coord cluster against a 3-member real etcd, side by side, in one run.

1. Throughput: put, linearizable get and lock txn at 64 clients through the leader's client
   port (the same load generator as ``bench.kv_bench``: ``bench.loadgen``), with ratios;
   both clusters run at once and the runs alternate etcd/coord (the median of ``--reps``
   runs' ops/s; p50/p99 over all their operations).
2. Leader failover: kill -9 the leader, then time until the first successful write through
   another member (a client retrying a put every 10 ms, 0.5 s deadline per attempt);
   median of ``--rounds`` (default 5) fresh clusters of each kind.

Both clusters run on this machine with fresh data dirs, one after the other.

Run: ``python -m bench.cluster_bench [--seconds 5] [--rounds 5] [--markdown docs/cluster.md]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bench.loadgen import Result, alternate
from coord.pb import rpc_pb2, rpc_pb2_grpc
from tests.helpers.procs import ProcessGroup, process_group
from tests.process.cluster import CoordCluster, Member, start_etcd_members

WORKLOADS = ("put", "get", "lock")
CLIENTS = 64


def _status(endpoint: str) -> rpc_pb2.StatusResponse | None:
    try:
        with grpc.insecure_channel(endpoint) as ch:
            resp: rpc_pb2.StatusResponse = rpc_pb2_grpc.MaintenanceStub(ch).Status(
                rpc_pb2.StatusRequest(), timeout=1)
            return resp
    except grpc.RpcError:
        return None


def _leader(members: dict[str, Member], timeout: float = 30.0) -> str:
    """The name of the member every live member agrees is the leader."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        by_id: dict[int, str] = {}
        leaders = set()
        for name, m in members.items():
            if not m.alive():
                continue
            st = _status(m.endpoint)
            if st is None:
                break
            by_id[st.header.member_id] = name
            leaders.add(st.leader)
        else:
            if len(leaders) == 1 and (lead := leaders.pop()) in by_id:
                return by_id[lead]
        time.sleep(0.05)
    raise TimeoutError("no leader")


def _write_once(endpoint: str, n: int) -> bool:
    try:
        with grpc.insecure_channel(endpoint) as ch:
            rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"bench/failover",
                                                           value=str(n).encode()), timeout=0.5)
        return True
    except grpc.RpcError:
        return False


def failover_window(members: dict[str, Member]) -> float:
    """kill -9 the leader; seconds until a put through another member succeeds."""
    lead = _leader(members)
    other = next(m for n, m in members.items() if n != lead)
    assert _write_once(other.endpoint, 0), "cluster not writable before the failover"
    proc = members[lead].proc
    assert proc is not None
    t0 = time.monotonic()
    proc.kill9()
    n = 0
    while not _write_once(other.endpoint, n):
        n += 1
        time.sleep(0.01)
        if time.monotonic() - t0 > 60:
            raise TimeoutError("no write accepted within 60 s of the failover")
    return time.monotonic() - t0


def _coord(group: ProcessGroup) -> dict[str, Member]:
    c = CoordCluster(group, size=3, faults=False)
    c.start()
    return c.members


def _etcd(group: ProcessGroup) -> dict[str, Member]:
    return start_etcd_members(group, 3)


def _kill_all(group: ProcessGroup) -> None:
    for p in group.procs:
        if p.alive():
            p.kill9()


def _report(which: str, r: Result) -> None:
    sys.stdout.write(f"{which:5} {r.workload:4} c={r.clients} {r.ops_per_s:8.0f} ops/s  "
                     f"p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:7.2f} ms  errors {r.errors}\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3, help="interleaved runs per workload")
    ap.add_argument("--markdown", type=Path, default=None,
                    help="also write the result table to this file")
    args = ap.parse_args(argv)
    if shutil.which("etcd") is None:
        sys.stderr.write("etcd not found: apt-get install -y etcd-server\n")
        return 2
    starters = {"etcd": _etcd, "coord": _coord}
    results: dict[tuple[str, str], Result] = {}
    windows: dict[str, list[float]] = {"etcd": [], "coord": []}
    with tempfile.TemporaryDirectory() as tmp:
        # Both clusters up at once and the runs interleaved (bench.loadgen.alternate).
        groups = {w: ProcessGroup(Path(tmp) / f"{w}-load") for w in starters}
        try:
            leads: dict[str, str] = {}
            for which, start in starters.items():
                groups[which].workdir.mkdir(parents=True, exist_ok=True)
                members = start(groups[which])
                leads[which] = members[_leader(members)].endpoint
            for workload in WORKLOADS:
                cell = alternate(leads, workload, CLIENTS, args.seconds, args.reps, _report)
                for which, r in cell.items():
                    results[(which, workload)] = r
        finally:
            for g in groups.values():
                g.close()
        for i in range(args.rounds):
            for which, start in starters.items():
                with process_group(Path(tmp) / f"{which}-failover-{i}") as group:
                    group.workdir.mkdir(parents=True, exist_ok=True)
                    members = start(group)
                    w = failover_window(members)
                    windows[which].append(w)
                    sys.stdout.write(f"{which:5} failover round {i + 1}: {w:.3f} s\n")
                    sys.stdout.flush()
                    _kill_all(group)
    rows = ["| workload (64 clients, via the leader) | etcd ops/s | coord ops/s | ratio "
            "| etcd p50/p99 ms | coord p50/p99 ms |", "|---|---|---|---|---|---|"]
    for workload in WORKLOADS:
        e, c = results[("etcd", workload)], results[("coord", workload)]
        ratio = c.ops_per_s / e.ops_per_s if e.ops_per_s else 0.0
        rows.append(f"| {workload} | {e.ops_per_s:.0f} | {c.ops_per_s:.0f} | {ratio:.2f} | "
                    f"{e.p50_ms:.1f} / {e.p99_ms:.1f} | {c.p50_ms:.1f} / {c.p99_ms:.1f} |")
    rows.append("")
    med = {k: statistics.median(v) for k, v in windows.items()}
    rows.append("| leader failover (kill -9, first write via another member) | etcd | coord |")
    rows.append("|---|---|---|")
    rows.append(f"| median of {args.rounds} | {med['etcd']:.2f} s | {med['coord']:.2f} s |")
    rows.append(f"| all rounds | {', '.join(f'{w:.2f}' for w in windows['etcd'])} | "
                f"{', '.join(f'{w:.2f}' for w in windows['coord'])} |")
    table = "\n".join(rows)
    sys.stdout.write("\n" + table + "\n")
    sys.stdout.write(json.dumps({"throughput": {f"{k[0]}/{k[1]}": round(v.ops_per_s)
                                                for k, v in results.items()},
                                 "failover_median_s": med}) + "\n")
    if args.markdown is not None:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
