"""Applier micro-benchmark and memory check (not collected by pytest).

Run: ``.venv/bin/python -m tests.mvcc.bench_store``. CPU time (``process_time``) is used so
that a loaded machine does not distort the per-op cost; best of 3 runs.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from coord.pb import internal_pb2, rpc_pb2
from coord.server.apply import Applier

N = 20_000
VALUE = b"x" * 256


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def _best(fn: Callable[[], float], reps: int = 3) -> float:
    return min(fn() for _ in range(reps))


def _timed(a: Applier, reqs: list[internal_pb2.InternalRequest]) -> float:
    gc.disable()
    t0 = time.process_time()
    for q in reqs:
        a.apply(q, 0.0)
    t = time.process_time() - t0
    gc.enable()
    return t / len(reqs)


def put_new() -> float:
    reqs = [
        internal_pb2.InternalRequest(id=i, put=rpc_pb2.PutRequest(key=b"/k/%08d" % i, value=VALUE))
        for i in range(N)
    ]
    return _timed(Applier(), reqs)


def put_existing() -> float:
    reqs = [
        internal_pb2.InternalRequest(
            id=i, put=rpc_pb2.PutRequest(key=b"/k/%08d" % (i % 100), value=VALUE)
        )
        for i in range(N)
    ]
    return _timed(Applier(), reqs)


def lock_txn() -> float:
    reqs = []
    for i in range(N):
        k = b"/cron/lock/%d" % (i % 500)
        reqs.append(
            internal_pb2.InternalRequest(
                txn=rpc_pb2.TxnRequest(
                    compare=[rpc_pb2.Compare(key=k, target=rpc_pb2.Compare.CREATE,
                                             result=rpc_pb2.Compare.EQUAL, create_revision=0)],
                    success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=b"me"))],
                    failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=k))],
                )
            )
        )
    return _timed(Applier(), reqs)


def range_one() -> float:
    a = Applier()
    for i in range(N):
        a.put(rpc_pb2.PutRequest(key=b"/k/%08d" % i, value=VALUE))
    reqs = [rpc_pb2.RangeRequest(key=b"/k/%08d" % (i * 7 % N)) for i in range(N)]
    t0 = time.process_time()
    for q in reqs:
        a.range(q)
    return (time.process_time() - t0) / N


def memory_100k() -> float:
    gc.collect()
    base = _rss_mib()
    a = Applier()
    for i in range(100_000):
        q = internal_pb2.InternalRequest(
            id=i, put=rpc_pb2.PutRequest(key=b"/bench/key/%08d" % i, value=VALUE)
        )
        a.apply(internal_pb2.InternalRequest.FromString(q.SerializeToString()), 0.0)
    a.store.sorted_keys()
    gc.collect()
    return _rss_mib() - base


def main() -> None:
    for name, fn in [
        ("put (new key)", put_new),
        ("put (existing key)", put_existing),
        ("range (one key)", range_one),
        ("txn (lock recipe)", lock_txn),
    ]:
        t = _best(fn)
        print(f"{name:20s} {t * 1e6:6.2f} us/op {1 / t:10,.0f} ops/s")
    print(f"100k keys x 256 B: {memory_100k():.1f} MiB RSS above the interpreter")


if __name__ == "__main__":
    main()
