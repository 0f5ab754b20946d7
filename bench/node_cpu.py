"""coord's own CPU per request, without gRPC: the service handlers called in-process.

A one-member coord (Raft core, WAL with fsync, applier) is built in this process and the
KV/Lease service methods are called directly by ``--clients`` asyncio tasks, the way
grpc.aio would call them — validation, proposal, Ready loop, WAL append + fsync on the
storage thread, apply, response header. What gRPC adds per call (about 0.4 ms of CPU on the
2-core dev machine, see docs/benchmarks.md) is not in these figures, and neither is the
noise of a load generator competing for the cores, so a change to the request path shows
up here clearly (±3 %) where ``bench.cpu_per_op`` needs many runs.

Prints, per workload, CPU µs per operation for the whole process (every thread) and for
the event-loop thread alone.

Run: ``python -m bench.node_cpu [--ops 20000] [--clients 64] [--workloads put,get,lock]
[--repeat 3] [--uvloop]``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from coord.api.kv import KVService
from coord.api.lease import LeaseService
from coord.pb import rpc_pb2
from coord.server.apply import Applier
from coord.server.config import ServerConfig
from coord.server.core import Core
from coord.server.raft_node import RaftNode

VALUE = b"v" * 256
KEYS = 10_000


class _Ctx:
    """Enough of a grpc.aio ServicerContext for the success path."""

    async def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"{code}: {details}")

    def invocation_metadata(self) -> tuple[()]:
        return ()


async def _one(kv: KVService, lease: LeaseService, workload: str, ops: int, cid: int) -> None:
    ctx: Any = _Ctx()
    rng = random.Random(cid)
    lease_id = 0
    if workload == "lock":
        lease_id = (await lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), ctx)).ID
    for _ in range(ops):
        k = rng.randrange(KEYS)
        if workload == "put":
            await kv.Put(rpc_pb2.PutRequest(key=b"bench/%d" % k, value=VALUE), ctx)
        elif workload == "get":
            await kv.Range(rpc_pb2.RangeRequest(key=b"bench/get"), ctx)
        else:
            key = b"bench/lock/%d" % (k % 100)
            r = await kv.Txn(rpc_pb2.TxnRequest(
                compare=[rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.CREATE,
                                         result=rpc_pb2.Compare.EQUAL, create_revision=0)],
                success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                    key=key, value=b"holder", lease=lease_id))],
                failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))]), ctx)
            if r.succeeded:
                await kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=key), ctx)


async def _run(data: Path, workloads: list[str], ops: int, clients: int,
               repeat: int) -> dict[str, list[tuple[float, float]]]:
    config = ServerConfig(name="n1", data_dir=data, listen_client="127.0.0.1:1",
                          listen_peer="127.0.0.1:2")
    data.mkdir(parents=True, exist_ok=True)
    applier = Applier()
    node = RaftNode(config, applier)
    core = Core(node, applier, config)
    kv, lease = KVService(core), LeaseService(core)
    node.recover()
    node.start()
    out: dict[str, list[tuple[float, float]]] = {w: [] for w in workloads}
    try:
        ctx: Any = _Ctx()
        while not node.is_leader:
            await asyncio.sleep(0.01)  # a benchmark's start-up, not a test
        await kv.Put(rpc_pb2.PutRequest(key=b"bench/get", value=VALUE), ctx)
        for _ in range(repeat):
            for workload in workloads:
                per = ops // clients
                p0, t0 = time.process_time(), time.thread_time()
                await asyncio.gather(*(_one(kv, lease, workload, per, i)
                                       for i in range(clients)))
                p1, t1 = time.process_time(), time.thread_time()
                n = per * clients
                out[workload].append((1e6 * (p1 - p0) / n, 1e6 * (t1 - t0) / n))
    finally:
        await node.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--ops", type=int, default=20_000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--workloads", default="put,get,lock")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    args = ap.parse_args(argv)
    # As the CLI does for a member (its WAL thread hands each fsync back to the loop).
    sys.setswitchinterval(0.0005)
    workloads = args.workloads.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        main_coro = _run(Path(tmp) / "n1", workloads, args.ops, args.clients, args.repeat)
        if args.uvloop:
            import uvloop  # noqa: PLC0415 - optional

            res = uvloop.run(main_coro)
        else:
            res = asyncio.run(main_coro)
    for workload in workloads:
        proc = statistics.median(p for p, _ in res[workload])
        loop = statistics.median(t for _, t in res[workload])
        each = ", ".join(f"{p:.0f}" for p, _ in res[workload])
        sys.stdout.write(f"{workload:4} c={args.clients:<3} process {proc:6.1f} µs/op, "
                         f"event-loop thread {loop:6.1f} µs/op   [{each}]\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
