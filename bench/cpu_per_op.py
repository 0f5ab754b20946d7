"""Server CPU per operation: coord against a real etcd, side by side.

Wall-clock throughput on a shared machine is noisy (other processes take the cores); the
CPU time a server spends on a fixed amount of work is much less so, and it is what limits
a single-threaded Python member. For each workload (put, linearizable get, lock txn —
``bench.loadgen``'s definitions) this drives ``--ops`` operations with ``--clients``
clients and reads the server's ``utime + stime`` from ``/proc/<pid>/stat`` (all its
threads) before and after; it prints CPU milliseconds per operation for each server and
the coord/etcd ratio. The server's idle CPU rate (measured for ``--idle`` seconds first) is
subtracted for the part of the window in which the load generator was starting up.

With ``--cluster 3`` it starts 3-member clusters, sends the load to the leader, and reports
the leader's CPU per op and the sum over all members.

``--against DIR`` adds a third server: a single coord member running another source tree
(``mkdir DIR && git archive REV | tar -x -C DIR``), interleaved with the others — an A/B
comparison that sees the same background load on both sides.

``--tls`` serves coord's client port over TLS (a throwaway CA and server certificate made
with ``tests/tls/certs.py``; ``--cert-file``/``--key-file``) and the load generator
connects with TLS trusting that CA (single coord members only: with ``--only coord``).

Run: ``python -m bench.cpu_per_op [--ops 20000] [--clients 64] [--only coord]
[--workloads put,get,lock] [--cluster 3] [--repeat 3] [--against DIR] [--tls]
[--profile DIR [--native]]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.cluster_bench import _leader
from bench.loadgen import run
from tests.helpers.procs import (
    ProcessGroup,
    coord_argv,
    free_port,
    port_open,
    process_group,
    start_coord,
    start_etcd,
    wait_until,
)
from tests.process.cluster import CoordCluster, start_etcd_members
from tests.tls.certs import make_ca

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (every thread), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after the ")" ending comm: field 3 (state) is fields[0]; utime is 14, stime 15
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Server:
    which: str
    endpoint: str  # where the load goes (the leader of a cluster)
    pids: list[int]  # every member; pids[0] serves ``endpoint``


@dataclass
class Sample:
    ops: int
    errors: int
    elapsed: float
    cpu_ms_per_op: float  # the member serving the load
    total_cpu_ms_per_op: float  # all members
    ops_per_s: float
    p99_ms: float
    cpu_ms_per_request: float  # the serving member, per RPC (lock: txn + delete of winners)


def _idle_rates(pids: list[int], seconds: float) -> list[float]:
    before = [cpu_seconds(p) for p in pids]
    time.sleep(seconds)  # a measurement interval, not a wait for a condition
    return [(cpu_seconds(p) - b) / seconds for p, b in zip(pids, before, strict=True)]


def _py_spy(pid: int, out: Path, native: bool) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` (collapsed stacks, all threads) until it is interrupted."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    extra = ["--native"] if native else []
    return subprocess.Popen([exe, "record", "-r", "200", "-f", "raw", "-o", str(out),
                             "--threads", "--nonblocking", "--pid", str(pid), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(server: Server, workload: str, clients: int, ops: int, idle: float,
            profile: Path | None = None, native: bool = False,
            cacert: str | None = None) -> Sample:
    rates = _idle_rates(server.pids, idle) if idle > 0 else [0.0] * len(server.pids)
    t0 = time.monotonic()
    before = [cpu_seconds(p) for p in server.pids]
    spy = _py_spy(server.pids[0], profile, native) if profile is not None else None
    r = run(server.endpoint, workload, clients, seconds=600.0, ops=ops, cacert=cacert)
    after = [cpu_seconds(p) for p in server.pids]
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait()
    window = time.monotonic() - t0
    startup = max(0.0, window - r.seconds)
    used = [a - b - rate * startup for a, b, rate in zip(after, before, rates, strict=True)]
    n = max(1, r.ops)
    return Sample(r.ops, r.errors, r.seconds, 1000 * used[0] / n, 1000 * sum(used) / n,
                  r.ops_per_s, r.p99_ms, 1000 * used[0] / max(1, r.requests))


def _coord_from(group: ProcessGroup, src: Path, tls: list[str], which: str = "base") -> Server:
    """A single coord member running the code of another source tree (e.g. a
    ``git archive`` of an earlier commit), for A/B comparisons on a noisy machine;
    ``tls``: extra arguments (``--cert-file``, ``--key-file``)."""
    name = f"base{len(group.procs)}"
    cport, pport = free_port(), free_port()
    p = group.spawn(name, coord_argv(name, group.workdir / f"{name}-data", cport, pport) + tls,
                    cport, env={"PYTHONPATH": str(src.resolve())})
    wait_until(lambda: port_open(cport) or not p.alive(), 30, f"coord on :{cport}")
    if not p.alive():
        raise RuntimeError(f"coord from {src} exited early:\n{p.log()}")
    return Server(which, p.endpoint, [p.popen.pid])


def _single(group: ProcessGroup, which: str, tls: list[str]) -> Server:
    if which == "etcd":
        p = start_etcd(group, name=f"etcd{len(group.procs)}")
    elif tls:
        return _coord_from(group, Path(__file__).resolve().parent.parent, tls, which)
    else:
        p = start_coord(group, name=f"n{len(group.procs)}")
    return Server(which, p.endpoint, [p.popen.pid])


def _tls_args(directory: Path) -> tuple[list[str], str]:
    """A throwaway CA and a server certificate for 127.0.0.1: coord's arguments and the
    CA file the clients trust."""
    ca = make_ca(directory / "certs")
    pair = ca.issue(directory / "certs", "server")
    return ["--cert-file", str(pair.cert), "--key-file", str(pair.key)], str(ca.cert)


def _cluster(group: ProcessGroup, which: str, size: int) -> Server:
    if which == "etcd":
        members = start_etcd_members(group, size)
    else:
        c = CoordCluster(group, size=size, faults=False)
        c.start()
        members = c.members
    lead = _leader(members)
    order = [lead] + [n for n in members if n != lead]
    pids = []
    for n in order:
        proc = members[n].proc
        assert proc is not None
        pids.append(proc.popen.pid)
    return Server(which, members[lead].endpoint, pids)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--ops", type=int, default=20_000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--workloads", default="put,get,lock")
    ap.add_argument("--only", choices=("coord", "etcd"), default=None)
    ap.add_argument("--cluster", type=int, default=1, help="members per server (1 or 3)")
    ap.add_argument("--idle", type=float, default=1.0, help="seconds of idle CPU sampling")
    ap.add_argument("--repeat", type=int, default=1, help="runs per cell (median shown)")
    ap.add_argument("--profile", type=Path, default=None,
                    help="record coord with py-spy (pip install py-spy) into "
                         "DIR/<workload>.raw, collapsed stacks (inflates its CPU figures)")
    ap.add_argument("--native", action="store_true", help="with --profile: native frames too")
    ap.add_argument("--tls", action="store_true",
                    help="coord's client port and the load over TLS (needs --only coord)")
    ap.add_argument("--against", type=Path, default=None,
                    help="also run a single coord member from this source tree ('base'), "
                         "interleaved with the others (e.g. git archive HEAD | tar -x -C DIR)")
    args = ap.parse_args(argv)
    which_all = [args.only] if args.only else ["etcd", "coord"]
    if "etcd" in which_all and shutil.which("etcd") is None:
        sys.stderr.write("etcd not found: apt-get install -y etcd-server\n")
        return 2
    if args.tls and (args.only != "coord" or args.cluster != 1):
        sys.stderr.write("--tls needs --only coord (single members)\n")
        return 2
    workloads = args.workloads.split(",")
    results: dict[tuple[str, str], Sample] = {}
    with tempfile.TemporaryDirectory() as tmp, process_group(Path(tmp)) as group:
        tls, cacert = _tls_args(Path(tmp)) if args.tls else ([], None)
        servers = {w: (_single(group, w, tls) if args.cluster == 1
                       else _cluster(group, w, args.cluster)) for w in which_all}
        if args.against is not None:
            servers["base"] = _coord_from(group, args.against, tls)
            which_all.append("base")
        for workload in workloads:
            runs: dict[str, list[Sample]] = {w: [] for w in which_all}
            for _ in range(args.repeat):  # interleaved: the background load drifts
                for which in which_all:
                    prof = None
                    if args.profile is not None and which == "coord":
                        args.profile.mkdir(parents=True, exist_ok=True)
                        prof = args.profile / f"{workload}.raw"
                    runs[which].append(measure(servers[which], workload, args.clients,
                                               args.ops, args.idle, prof, args.native,
                                               cacert))
            for which in which_all:
                samples = sorted(runs[which], key=lambda s: s.cpu_ms_per_op)
                s = samples[len(samples) // 2]
                results[(which, workload)] = s
                extra = (f"  all members {s.total_cpu_ms_per_op:.3f} ms/op"
                         if args.cluster > 1 else "")
                if workload == "lock":
                    extra += f"  ({s.cpu_ms_per_request:.3f} ms/request)"
                each = ", ".join(f"{x.cpu_ms_per_op:.3f}" for x in runs[which])
                sys.stdout.write(
                    f"{which:5} {workload:4} c={args.clients:<3} {s.ops} ops in "
                    f"{s.elapsed:5.1f} s ({s.ops_per_s:6.0f}/s, p99 {s.p99_ms:6.1f} ms, "
                    f"errors {s.errors})  CPU {s.cpu_ms_per_op:.3f} ms/op{extra}"
                    f"{f'  [{each}]' if args.repeat > 1 else ''}\n")
                sys.stdout.flush()
    if "etcd" in which_all and "coord" in which_all:
        sys.stdout.write("\n| workload | etcd CPU ms/op | coord CPU ms/op | coord/etcd |\n"
                         "|---|---|---|---|\n")
        for workload in workloads:
            e, c = results[("etcd", workload)], results[("coord", workload)]
            ratio = c.cpu_ms_per_op / e.cpu_ms_per_op if e.cpu_ms_per_op > 0 else 0.0
            sys.stdout.write(f"| {workload} | {e.cpu_ms_per_op:.3f} | {c.cpu_ms_per_op:.3f} | "
                             f"{ratio:.1f} |\n")
    if "base" in which_all and "coord" in which_all:
        sys.stdout.write(f"\ncoord (this tree) vs base ({args.against}):\n")
        for workload in workloads:
            b, c = results[("base", workload)], results[("coord", workload)]
            sys.stdout.write(f"  {workload:4} base {b.cpu_ms_per_op:.3f} -> {c.cpu_ms_per_op:.3f} "
                             f"ms/op ({c.cpu_ms_per_op / b.cpu_ms_per_op - 1:+.0%})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
