"""Scheduler fire lag and claim cost: 3 agents on an embedded 3-member coord, and 3 workers
on a real 3-member etcd, side by side.

Every job appends ``job occurrence start-time`` to one file from inside the child process,
so the fire lag is measured from the scheduled instant to the moment the child ran. Claim
txns per occurrence (claim attempts: a batched store txn carries several) come from the
workers' own counters, logged at shutdown with their per-stage lag figures (timer wake-up,
claim, spawn). CPU per occurrence is utime+stime of the worker processes (on coord: the
agents, store member included) and of the etcd members over the measured window, divided
by the occurrences started in it.

Run: ``python -m bench.scheduler_bench [--jobs 1000] [--seconds 120] [--every 10]
[--sweep 250,500,1000,2000]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from scheduler.plan import parse_occurrence_id
from tests.helpers.procs import (
    REPO,
    Proc,
    ProcessGroup,
    free_port,
    port_open,
    process_group,
    start_etcd_cluster,
    wait_until,
)


def job_file(path: Path, out: Path, jobs: int, every: int) -> None:
    lines = ["jobs:"]
    for i in range(jobs):
        lines += [f"  - name: b{i:05d}", f'    schedule: "@every {every}s"',
                  f"    command: 'echo \"$RAFTCRON_JOB $RAFTCRON_OCCURRENCE $(date +%s.%N)\" "
                  f">> {out}'"]
    path.write_text("\n".join(lines) + "\n")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "scheduler.cli", *args]


ENV = {"PYTHONPATH": str(REPO), "RAFTCRON_LOG_LEVEL": os.environ.get("RAFTCRON_LOG_LEVEL", "info")}


def start_coord_agents(group: ProcessGroup) -> tuple[list[Proc], str]:
    names = ["a1", "a2", "a3"]
    cports = {n: free_port() for n in names}
    pports = {n: free_port() for n in names}
    initial = ",".join(f"{n}=127.0.0.1:{pports[n]}" for n in names)
    procs = []
    for n in names:
        procs.append(group.spawn(n, cli(
            "agent", "--name", n, "--data-dir", str(group.workdir / f"{n}-data"),
            "--listen-client", f"127.0.0.1:{cports[n]}",
            "--listen-peer", f"127.0.0.1:{pports[n]}", "--initial-cluster", initial,
            "--log-dir", str(group.workdir / "logs" / n)), cports[n], env=ENV))
    for p in procs:
        wait_until(lambda p=p: port_open(p.client_port), 60, f"agent {p.name}")  # type: ignore[misc]
    return procs, ",".join(p.endpoint for p in procs)


def start_etcd_workers(group: ProcessGroup) -> tuple[list[Proc], str]:
    members = start_etcd_cluster(group, 3)
    endpoints = ",".join(m.endpoint for m in members)
    workers = [group.spawn(n, cli("worker", "--endpoints", endpoints, "--name", n,
                                  "--log-dir", str(group.workdir / "logs" / n)), 0, env=ENV)
               for n in ("w1", "w2", "w3")]
    return workers, endpoints


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (its threads included), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(backend: str, jobs: int, seconds: float, every: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, process_group(Path(tmp)) as group:
        out = Path(tmp) / "starts.txt"
        spec = Path(tmp) / "jobs.yaml"
        job_file(spec, out, jobs, every)
        workers, endpoints = (start_coord_agents(group) if backend == "coord"
                              else start_etcd_workers(group))
        stores = [p for p in group.procs if p not in workers]
        env = dict(os.environ, **ENV)
        subprocess.run(cli("apply", "-f", str(spec), "--endpoints", endpoints), env=env,
                       check=True, capture_output=True, timeout=300)
        t0 = time.time() + every  # ignore the first period (jobs still being loaded)
        time.sleep(every)
        c0 = time.time()
        w_cpu0 = sum(cpu_seconds(w.popen.pid) for w in workers)
        s_cpu0 = sum(cpu_seconds(p.popen.pid) for p in stores)
        time.sleep(max(seconds - every, 1.0))
        c1 = time.time()
        w_cpu = sum(cpu_seconds(w.popen.pid) for w in workers) - w_cpu0
        s_cpu = sum(cpu_seconds(p.popen.pid) for p in stores) - s_cpu0
        t1 = time.time() - 2
        for w in workers:
            w.terminate(timeout=60)
        if os.environ.get("BENCH_KEEP"):
            shutil.copytree(tmp, os.environ["BENCH_KEEP"], dirs_exist_ok=True)
        lags, seen, in_window = [], Counter(), 0
        for line in out.read_text().splitlines():
            job, occ, started = line.split()
            instant = parse_occurrence_id(occ).timestamp()
            seen[(job, occ)] += 1
            if t0 <= instant <= t1:
                lags.append(float(started) - instant)
            if c0 <= float(started) < c1:
                in_window += 1
        claims = batches = 0
        stages: dict[str, float] = {}
        for w in workers:
            for line in w.log().splitlines():
                if '"worker.stopped"' in line:
                    stopped = json.loads(line)
                    claims += stopped.get("claim_txns", 0)
                    batches += stopped.get("batched_txns", 0)
                    for stage, fig in stopped.get("lag_ms", {}).items():
                        stages[stage] = max(stages.get(stage, 0.0), fig["p99"])
        occurrences = len(seen)
        lags.sort()
        return {
            "occurrences": occurrences,
            "duplicates": sum(1 for n in seen.values() if n > 1),
            "p50_ms": statistics.median(lags) * 1000 if lags else float("nan"),
            "p99_ms": lags[max(0, int(len(lags) * 0.99) - 1)] * 1000 if lags else float("nan"),
            "max_ms": lags[-1] * 1000 if lags else float("nan"),
            "claims_per_occurrence": claims / occurrences if occurrences else float("nan"),
            "store_txns_per_occurrence": batches / occurrences if occurrences else float("nan"),
            "worker_cpu_ms": w_cpu * 1000 / in_window if in_window else float("nan"),
            "store_cpu_ms": s_cpu * 1000 / in_window if in_window else float("nan"),
            "wake_p99_ms": stages.get("wake", float("nan")),
            "claim_p99_ms": stages.get("claim", float("nan")),
            "spawn_p99_ms": stages.get("spawn", float("nan")),
        }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--sweep", default="", help="job counts for the p99 < 1 s search")
    ap.add_argument("--backends", default="coord,etcd")
    args = ap.parse_args(argv)
    sys.stdout.write(f"load average at start: {os.getloadavg()}\n")
    rows = ["| backend | jobs | occurrences | duplicates | lag p50 ms | p99 ms | max ms "
            "| claim txns / occurrence | worker CPU ms / occurrence | store CPU ms / occurrence "
            "| p99 wake / claim / spawn ms |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    counts = [args.jobs] + [int(x) for x in args.sweep.split(",") if x]
    for jobs in counts:
        for backend in args.backends.split(","):
            r = measure(backend, jobs, args.seconds if jobs == args.jobs else 60, args.every)
            row = (f"| {backend} | {jobs} | {r['occurrences']:.0f} | {r['duplicates']:.0f} | "
                   f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['max_ms']:.0f} | "
                   f"{r['claims_per_occurrence']:.2f} | {r['worker_cpu_ms']:.2f} | "
                   f"{r['store_cpu_ms']:.2f} | {r['wake_p99_ms']:.0f} / {r['claim_p99_ms']:.0f}"
                   f" / {r['spawn_p99_ms']:.0f} |")
            rows.append(row)
            sys.stdout.write(row + "\n")
            sys.stdout.flush()
    sys.stdout.write("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
