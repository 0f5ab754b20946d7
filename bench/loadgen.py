"""A small etcd-v3 load generator, the same for coord and for a real etcd.

Workloads (``run(endpoint, workload, clients, seconds)``):

* ``put``  — Put of a 256-byte value to one of 10,000 keys;
* ``get``  — linearizable Range of one pre-written key;
* ``lock`` — the lock txn: ``create(lock/k) == 0`` → put with the client's lease, else get;
  the winner then deletes the lock (the delete is counted as part of the same operation).

Clients are asyncio tasks spread over ``procs`` processes (one gRPC channel per process),
so the generator itself is not the bottleneck on one core. Latencies are per operation.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from coord.pb import rpc_pb2, rpc_pb2_grpc

VALUE = b"v" * 256
KEYS = 10_000


@dataclass
class Result:
    workload: str
    clients: int
    ops: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    """RPCs sent (a lock operation is one txn, plus a delete when it won the lock)."""
    latencies: list[float] = field(default_factory=list, repr=False)
    """Every operation's latency in seconds, sorted."""

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0


async def _client(stub: Any, lease_stub: Any, workload: str, deadline: float,
                  lat: list[float], errors: list[int], cid: int, quota: int) -> None:
    rng = random.Random(cid)
    lease_id = 0
    if workload == "lock":
        lease_id = (await lease_stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60))).ID
    done = 0
    while time.monotonic() < deadline and done < quota:
        done += 1
        k = rng.randrange(KEYS)
        t0 = time.perf_counter()
        try:
            if workload == "put":
                await stub.Put(rpc_pb2.PutRequest(key=b"bench/%d" % k, value=VALUE))
            elif workload == "get":
                await stub.Range(rpc_pb2.RangeRequest(key=b"bench/get"))
            else:
                key = b"bench/lock/%d" % (k % 100)
                r = await stub.Txn(rpc_pb2.TxnRequest(
                    compare=[rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.CREATE,
                                             result=rpc_pb2.Compare.EQUAL, create_revision=0)],
                    success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                        key=key, value=b"holder", lease=lease_id))],
                    failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))]))
                if r.succeeded:
                    errors[1] += 1
                    await stub.DeleteRange(rpc_pb2.DeleteRangeRequest(key=key))
        except grpc.aio.AioRpcError:
            errors[0] += 1
            continue
        lat.append(time.perf_counter() - t0)


def _credentials(cacert: str | None) -> grpc.ChannelCredentials | None:
    """TLS credentials trusting the CA in ``cacert`` (a PEM file), or None: plaintext."""
    if cacert is None:
        return None
    with open(cacert, "rb") as f:
        return grpc.ssl_channel_credentials(root_certificates=f.read())


def _proc_main(endpoint: str, workload: str, clients: int, seconds: float, start_at: float,
               first_id: int, out: Any, quotas: list[int], cacert: str | None = None) -> None:
    async def main() -> tuple[list[float], int, int, float]:
        creds = _credentials(cacert)
        async with (grpc.aio.insecure_channel(endpoint) if creds is None
                    else grpc.aio.secure_channel(endpoint, creds)) as ch:
            stub = rpc_pb2_grpc.KVStub(ch)
            lease_stub = rpc_pb2_grpc.LeaseStub(ch)
            await asyncio.sleep(max(0.0, start_at - time.time()))
            t0 = time.monotonic()
            deadline = t0 + seconds
            lat: list[float] = []
            errors = [0, 0]  # failed operations, extra requests (lock deletes)
            await asyncio.gather(*(_client(stub, lease_stub, workload, deadline, lat, errors,
                                           first_id + i, quotas[i]) for i in range(clients)))
            return lat, errors[0], errors[1], time.monotonic() - t0
    out.send(asyncio.run(main()))
    out.close()


def prepare(endpoint: str, cacert: str | None = None) -> None:
    creds = _credentials(cacert)
    with (grpc.insecure_channel(endpoint) if creds is None
          else grpc.secure_channel(endpoint, creds)) as ch:
        rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"bench/get", value=VALUE),
                                    timeout=10)


def run(endpoint: str, workload: str, clients: int, seconds: float = 5.0,
        procs: int | None = None, ops: int | None = None, cacert: str | None = None) -> Result:
    """Drive ``clients`` clients for ``seconds``; with ``ops``, stop as soon as that many
    operations were attempted in all (spread evenly over the clients) — the fixed amount
    of work ``bench.cpu_per_op`` divides the server's CPU time by. ``cacert``: connect
    over TLS, trusting that CA."""
    prepare(endpoint, cacert)
    nprocs = procs or min(clients, max(1, (os.cpu_count() or 2)))
    per = [clients // nprocs + (1 if i < clients % nprocs else 0) for i in range(nprocs)]
    ctx = mp.get_context("spawn")
    start_at = time.time() + 1.5  # let every process connect first
    pipes, workers = [], []
    if ops is None:
        quota = [2**62] * clients
    else:
        quota = [ops // clients + (1 if i < ops % clients else 0) for i in range(clients)]
    first = 0
    for n in per:
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_proc_main, args=(endpoint, workload, n, seconds, start_at,
                                                 first, send, quota[first:first + n],
                                                 cacert))
        p.start()
        first += n
        pipes.append(recv)
        workers.append(p)
    lat: list[float] = []
    errors = extra = 0
    elapsed = 0.0
    for recv in pipes:
        part, err, more, took = recv.recv()
        lat.extend(part)
        errors += err
        extra += more
        elapsed = max(elapsed, took)
    for p in workers:
        p.join()
    lat.sort()
    p50, p99 = _percentiles(lat)
    return Result(workload, clients, len(lat), elapsed if ops is not None else seconds,
                  p50, p99, errors, len(lat) + errors + extra, lat)


def _percentiles(lat: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds of sorted latencies in seconds."""
    if not lat:
        return 0.0, 0.0
    return statistics.median(lat) * 1000, lat[max(0, int(len(lat) * 0.99) - 1)] * 1000


def combine(runs: list[Result]) -> Result:
    """Several runs of one cell as one result: the throughput of the median run (by
    ops/s), the latency percentiles of every operation of every run pooled."""
    ordered = sorted(runs, key=lambda r: r.ops_per_s)
    mid = ordered[len(ordered) // 2]
    lat = sorted(x for r in runs for x in r.latencies)
    p50, p99 = _percentiles(lat)
    return Result(mid.workload, mid.clients, mid.ops, mid.seconds, p50, p99,
                  sum(r.errors for r in runs), sum(r.requests for r in runs), lat)


def alternate(endpoints: Mapping[str, str], workload: str, clients: int, seconds: float,
              reps: int, report: Callable[[str, Result], None]) -> dict[str, Result]:
    """Run one cell ``reps`` times against every server, interleaved and with the order
    reversed every other round (A B, B A, A B ...), and ``combine`` each server's runs.

    The servers must all be up: a machine's background load drifts over minutes (on a
    VM, the host's too), and measuring one server after the other would charge that drift
    to one side of the ratio; interleaving spreads it over both."""
    runs: dict[str, list[Result]] = {name: [] for name in endpoints}
    names = list(endpoints)
    for i in range(reps):
        for name in names if i % 2 == 0 else reversed(names):
            r = run(endpoints[name], workload, clients, seconds)
            runs[name].append(r)
            report(name, r)
    return {name: combine(rs) for name, rs in runs.items()}


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def load_keys(endpoint: str, count: int = 100_000, size: int = 256, batch: int = 100) -> None:
    """Write ``count`` keys of ``size`` bytes in txns of ``batch`` puts (8 in flight)."""
    value = b"x" * size

    async def main() -> None:
        async with grpc.aio.insecure_channel(endpoint) as ch:
            stub = rpc_pb2_grpc.KVStub(ch)
            sem = asyncio.Semaphore(8)

            async def one(start: int) -> None:
                async with sem:
                    ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                        key=b"rss/%08d" % i, value=value))
                        for i in range(start, min(start + batch, count))]
                    await stub.Txn(rpc_pb2.TxnRequest(success=ops), timeout=60)
            await asyncio.gather(*(one(s) for s in range(0, count, batch)))
    asyncio.run(main())
