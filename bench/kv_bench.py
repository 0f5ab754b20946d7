"""Single-member coord against a single-member real etcd, side by side, in one run.

For each workload (put, linearizable get, lock txn) at 1 and 64 clients: ops/s, p50, p99
and the coord/etcd ratios; then the RSS of each server after loading 100,000 keys of
256 bytes. Both servers run on this machine at once with fresh data dirs and are driven by
the same load generator (``bench.loadgen``); every cell is run ``--reps`` times per server,
interleaved (etcd, coord, coord, etcd, ...), and reported as the median run's throughput
and the p50/p99 of all its runs' operations pooled.

Run: ``python -m bench.kv_bench [--seconds 5] [--reps 3] [--keys 100000]
[--markdown docs/benchmarks.md]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from bench.loadgen import Result, alternate, load_keys, rss_bytes
from tests.helpers.procs import ProcessGroup, process_group, start_coord, start_etcd

WORKLOADS = ("put", "get", "lock")
CLIENTS = (1, 64)


def fresh(group: ProcessGroup, which: str) -> tuple[str, int]:
    if which == "etcd":
        p = start_etcd(group, name=f"etcd{len(group.procs)}")
    else:
        p = start_coord(group, name=f"n{len(group.procs)}")
    return p.endpoint, p.popen.pid


def _report(which: str, r: Result) -> None:
    sys.stdout.write(f"{which:5} {r.workload:4} c={r.clients:<3} {r.ops_per_s:8.0f} ops/s  "
                     f"p50 {r.p50_ms:6.2f} ms  p99 {r.p99_ms:6.2f} ms  errors {r.errors}\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--reps", type=int, default=3,
                    help="interleaved runs of every cell per server (median shown)")
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--markdown", type=Path, default=None,
                    help="also write the table to this file")
    args = ap.parse_args(argv)
    if shutil.which("etcd") is None:
        sys.stderr.write("etcd not found: apt-get install -y etcd-server\n")
        return 2
    rows: list[str] = []
    results: dict[tuple[str, str, int], Result] = {}
    with tempfile.TemporaryDirectory() as tmp, process_group(Path(tmp)) as group:
        endpoints = {which: fresh(group, which)[0] for which in ("etcd", "coord")}
        for workload in WORKLOADS:
            for clients in CLIENTS:
                cell = alternate(endpoints, workload, clients, args.seconds, args.reps,
                                 _report)
                for which, r in cell.items():
                    results[(which, workload, clients)] = r
        for p in group.procs:
            if p.alive():
                p.kill9()
        rss: dict[str, int] = {}
        for which in ("etcd", "coord"):
            endpoint, pid = fresh(group, which)
            load_keys(endpoint, args.keys)
            rss[which] = rss_bytes(pid)
            mib = rss[which] / 2**20
            sys.stdout.write(f"{which:5} RSS after {args.keys} keys: {mib:.1f} MiB\n")
            group.procs[-1].kill9()
    rows.append("| workload | clients | etcd ops/s | coord ops/s | ratio | etcd p50/p99 ms "
                "| coord p50/p99 ms | p99 ratio |")
    rows.append("|---|---|---|---|---|---|---|---|")
    for workload in WORKLOADS:
        for clients in CLIENTS:
            e, c = results[("etcd", workload, clients)], results[("coord", workload, clients)]
            ratio = c.ops_per_s / e.ops_per_s if e.ops_per_s else 0.0
            p99r = c.p99_ms / e.p99_ms if e.p99_ms else 0.0
            rows.append(f"| {workload} | {clients} | {e.ops_per_s:.0f} | {c.ops_per_s:.0f} | "
                        f"{ratio:.2f} | {e.p50_ms:.2f} / {e.p99_ms:.2f} | "
                        f"{c.p50_ms:.2f} / {c.p99_ms:.2f} | {p99r:.2f} |")
    rows.append("")
    rows.append(f"Each cell: the median of {args.reps} interleaved {args.seconds:g}-second runs "
                "per server (ops/s); p50/p99 over all their operations.")
    rows.append("")
    rows.append(f"RSS after {args.keys:,} keys of 256 B: etcd {rss['etcd'] / 2**20:.1f} MiB, "
                f"coord {rss['coord'] / 2**20:.1f} MiB "
                f"(ratio {rss['coord'] / rss['etcd']:.2f})")
    table = "\n".join(rows)
    sys.stdout.write("\n" + table + "\n")
    if args.markdown is not None:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
