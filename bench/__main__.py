"""`make bench`: every benchmark, each against a real etcd in the same run where it applies.

python -m bench [kv|raft|scheduler|cluster ...]   (default: all)
"""

from __future__ import annotations

import importlib
import sys

SUITES = {
    "raft": "bench.raft_throughput",
    "kv": "bench.kv_bench",
    "cluster": "bench.cluster_bench",
    "scheduler": "bench.scheduler_bench",
}


def main() -> int:
    chosen = sys.argv[1:] or list(SUITES)
    unknown = [c for c in chosen if c not in SUITES]
    if unknown:
        sys.stderr.write(f"unknown suite(s) {unknown}; choose from {list(SUITES)}\n")
        return 2
    status = 0
    for name in chosen:
        sys.stdout.write(f"\n=== {name} ({SUITES[name]}) ===\n")
        sys.stdout.flush()
        module = importlib.import_module(SUITES[name])
        sys.argv = [SUITES[name]]  # each suite parses its own (default) options
        status |= int(module.main() or 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
