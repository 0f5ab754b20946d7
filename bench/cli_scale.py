"""The client commands at scale (#13 item 16): wall time of `validate`, `apply` (first and
idempotent re-apply), `jobs list` (table and `-o json`) and a filtered `jobs list` with N jobs
(default 20,000) in one file, each run once as a user runs it (a fresh `python -m
scheduler.cli` process against a single coord member on loopback), plus one run history record
per job so `jobs list` has a "last" column to fill.

python -m bench.cli_scale [--jobs 20000] [--timeout 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
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


def timed(args: list[str], timeout: float) -> tuple[float, str]:
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "scheduler.cli", *args], capture_output=True,
                         text=True, timeout=timeout, check=False,
                         env=dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200"))
    took = time.monotonic() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{args} exited {res.returncode}: {res.stderr[-2000:]}")
    return took, res.stdout


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
    ap.add_argument("--timeout", type=float, default=300, help="per command, seconds")
    opts = ap.parse_args()
    n = opts.jobs
    with tempfile.TemporaryDirectory(prefix="cli-scale-") as tmp, \
            process_group(Path(tmp)) as group:
        ep = start_coord(group).endpoint
        f = Path(tmp) / "jobs.yaml"
        job_file(f, n)
        rows: list[tuple[str, float, str]] = []

        def run(label: str, *args: str) -> str:
            took, out = timed(list(args), opts.timeout)
            last = out.strip().splitlines()[-1] if out.strip() else ""
            rows.append((label, took, f"{len(out.splitlines())} lines; {last[:90]}"))
            return out
        run("validate", "validate", str(f))
        run("apply (first)", "apply", "-f", str(f), "--endpoints", ep)
        run("apply (again, no change)", "apply", "-f", str(f), "--endpoints", ep)
        asyncio.run(add_history(ep, n))
        run("jobs list (table)", "jobs", "list", "--endpoints", ep)
        out = run("jobs list -o json", "jobs", "list", "--endpoints", ep, "-o", "json")
        assert out.count('"name"') == n, "jobs list -o json must return every job"
        run("jobs list --tag shard=s3", "jobs", "list", "--endpoints", ep, "--tag", "shard=s3",
            "-o", "json")
        print(f"cli_scale: {n} jobs, one coord member on loopback, a fresh CLI process each")
        for label, took, what in rows:
            print(f"  {label:28s} {took:7.2f} s   ({what})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
