"""The client commands at scale (#13 item 16): wall time of `validate`, `apply` (first, an
idempotent re-apply, and a dry run that changes every job), `jobs list` (table and `-o json`)
and `jobs list` filtered by `--prefix` and by `--tag`, with N jobs (default 20,000) in one
file, each run as a user runs it (a fresh `python -m scheduler.cli` process against a single
coord member on loopback), plus one run history record per job so `jobs list` has a "last"
column to fill. Each read-only command runs --repeat times (the first apply once: it is what
it measures); the best and worst wall times are printed, with the best CPU time of the CLI
process itself and the load average, since the machine may be shared.

python -m bench.cli_scale [--jobs 20000] [--repeat 3] [--timeout 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from coord.client import Client
from scheduler import keys
from scheduler.claim import RunRecord
from tests.helpers.procs import REPO, process_group, start_coord


def job_file(path: Path, n: int) -> None:
    with path.open("w") as f:
        f.write("jobs:\n")
        for i in range(n):
            f.write(f"  - name: job-{i:05d}\n    schedule: \"{i % 60} * * * *\"\n"
                    f"    command: [echo, '{i}']\n    tags: {{shard: s{i % 10}}}\n")


def timed(args: list[str], timeout: float) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + system, of the CLI process alone: the figure a busy
    shared machine does not inflate) of one command, and its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "scheduler.cli", *args], capture_output=True,
                         text=True, timeout=timeout, check=False,
                         env=dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200"))
    took = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if res.returncode != 0:
        raise RuntimeError(f"{args} exited {res.returncode}: {res.stderr[-2000:]}")
    return took, cpu, res.stdout


async def add_history(endpoint: str, n: int) -> None:
    async with Client([endpoint]) as c:
        sem = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            async with sem:
                rec = RunRecord(job=f"job-{i:05d}", occurrence="20261122T013000Z",
                                status="succeeded")
                await c.put(keys.run_key(rec.job, rec.occurrence), rec.encode())
        await asyncio.gather(*(one(i) for i in range(n)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each read-only command")
    ap.add_argument("--timeout", type=float, default=300, help="per command, seconds")
    opts = ap.parse_args()
    n = opts.jobs
    with tempfile.TemporaryDirectory(prefix="cli-scale-") as tmp, \
            process_group(Path(tmp)) as group:
        ep = start_coord(group).endpoint
        f = Path(tmp) / "jobs.yaml"
        job_file(f, n)
        rows: list[tuple[str, float, float, float, str]] = []

        def run(label: str, *args: str, repeat: int = opts.repeat) -> str:
            took: list[float] = []
            cpu: list[float] = []
            out = ""
            for _ in range(repeat):
                t, c, out = timed(list(args), opts.timeout)
                took.append(t)
                cpu.append(c)
            last = out.strip().splitlines()[-1] if out.strip() else ""
            rows.append((label, min(took), max(took), min(cpu),
                         f"{len(out.splitlines())} lines; {last[:60]}"))
            return out
        run("validate", "validate", str(f))
        run("apply (first)", "apply", "-f", str(f), "--endpoints", ep, repeat=1)
        run("apply (again, no change)", "apply", "-f", str(f), "--endpoints", ep)
        changed = Path(tmp) / "changed.yaml"
        changed.write_text(f.read_text().replace("command: [echo,", "command: [/bin/echo,"))
        run("apply --dry-run (all change)", "apply", "-f", str(changed), "--endpoints", ep,
            "--dry-run")
        asyncio.run(add_history(ep, n))
        run("jobs list (table)", "jobs", "list", "--endpoints", ep)
        out = run("jobs list -o json", "jobs", "list", "--endpoints", ep, "-o", "json")
        assert out.count('"name"') == n, "jobs list -o json must return every job"
        run("jobs list --prefix job-1", "jobs", "list", "--endpoints", ep, "--prefix", "job-1",
            "-o", "json")
        run("jobs list --tag shard=s3", "jobs", "list", "--endpoints", ep, "--tag", "shard=s3",
            "-o", "json")
        print(f"cli_scale: {n} jobs, one coord member on loopback, a fresh CLI process each; "
              f"wall best and worst of {opts.repeat}, the CLI's own CPU (best); load average "
              f"{os.getloadavg()[0]:.1f} at the end")
        for label, best, worst, cpu, what in rows:
            print(f"  {label:30s} {best:6.2f} s {worst:6.2f} s  cpu {cpu:5.2f} s   ({what})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
