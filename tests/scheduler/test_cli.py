"""The client commands as a user runs them: apply (CAS, diff, dry-run, prune), validate,
jobs suspend/resume/delete/list/show, and graceful worker stop."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from coord.client import Client
from scheduler import keys
from tests.helpers.procs import REPO, ProcessGroup, process_group, start_coord
from tests.scheduler.test_worker_faults import until

JOBS = """jobs:
  - name: alpha
    schedule: "*/5 * * * *"
    command: [echo, alpha]
  - name: beta
    schedule: "@every 30s"
    command: echo beta
"""


@pytest.fixture(scope="module")
def coord(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with process_group(Path(tmp_path_factory.mktemp("cli"))) as group:
        yield start_coord(group).endpoint


def raftcron(endpoint: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    extra = ["--endpoints", endpoint] if endpoint else []
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *args, *extra],
                          capture_output=True, text=True, check=False, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


def stored(endpoint: str) -> dict[str, dict[str, object]]:
    async def body() -> dict[str, dict[str, object]]:
        async with Client([endpoint]) as c:
            r = await c.get(keys.JOBS, prefix=True)
        return {keys.name_from(kv.key, keys.JOBS): json.loads(kv.value) for kv in r.kvs}
    return asyncio.run(body())


def test_apply_dry_run_then_apply_then_idempotent(coord: str, tmp_path: Path) -> None:
    f = tmp_path / "jobs.yaml"
    f.write_text(JOBS)
    dry = raftcron(coord, "apply", "-f", str(f), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "+ alpha (add)" in dry.stdout and "dry run: nothing written" in dry.stdout
    assert stored(coord) == {}
    done = raftcron(coord, "apply", "-f", str(f))
    assert done.returncode == 0 and "2 job(s) changed" in done.stdout, done.stdout
    assert set(stored(coord)) == {"alpha", "beta"}
    again = raftcron(coord, "apply", "-f", str(f))
    assert "0 job(s) changed, 2 unchanged" in again.stdout, again.stdout

    f.write_text(JOBS.replace("*/5 * * * *", "*/10 * * * *"))
    edit = raftcron(coord, "apply", "-f", str(f))
    assert "~ alpha (change)" in edit.stdout
    assert '-  "schedule": "*/5 * * * *"' in edit.stdout.replace("      ", "")
    assert stored(coord)["alpha"]["schedule"] == "*/10 * * * *"

    f.write_text(JOBS.split("  - name: beta", maxsplit=1)[0])
    kept = raftcron(coord, "apply", "-f", str(f))
    assert "beta" in stored(coord), "without --prune nothing is deleted"
    assert kept.returncode == 0
    pruned = raftcron(coord, "apply", "-f", str(f), "--prune")
    assert "- beta (delete)" in pruned.stdout
    assert set(stored(coord)) == {"alpha"}


def test_invalid_file_writes_nothing_and_says_where(coord: str, tmp_path: Path) -> None:
    before = stored(coord)
    f = tmp_path / "bad.yaml"
    f.write_text(JOBS + "  - name: gamma\n    schedule: '61 * * * *'\n    command: [x]\n"
                 "    concurrency: sometimes\n")
    res = raftcron(coord, "apply", "-f", str(f))
    assert res.returncode == 2
    assert "bad.yaml:" in res.stderr and 'job "gamma"' in res.stderr
    assert "concurrency" in res.stderr and "schedule" in res.stderr
    assert stored(coord) == before


def test_validate_prints_next_fire_times(tmp_path: Path) -> None:
    f = tmp_path / "jobs.yaml"
    f.write_text(JOBS)
    res = raftcron(None, "validate", str(f))
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("+00:00") >= 10  # 5 fire times for each of the 2 jobs
    assert "2 job(s) OK" in res.stdout


def test_suspend_resume_delete_and_errors(coord: str, tmp_path: Path) -> None:
    f = tmp_path / "jobs.yaml"
    f.write_text(JOBS)
    assert raftcron(coord, "apply", "-f", str(f)).returncode == 0
    assert "beta suspended" in raftcron(coord, "jobs", "suspend", "beta").stdout
    # Runtime state, not spec: the stored spec is still what the file says.
    assert stored(coord)["beta"]["suspend"] is False
    assert "already suspended" in raftcron(coord, "jobs", "suspend", "beta").stdout
    assert "beta resumed" in raftcron(coord, "jobs", "resume", "beta").stdout
    listed = json.loads(raftcron(coord, "jobs", "list", "-o", "json").stdout)
    assert {row["name"] for row in listed} >= {"alpha", "beta"}
    shown = json.loads(raftcron(coord, "jobs", "show", "alpha", "-o", "json").stdout)
    assert len(shown["next"]) == 5 and shown["lock"] is None
    missing = raftcron(coord, "jobs", "show", "nope")
    assert missing.returncode == 1 and "no job named 'nope'" in missing.stderr
    # A kill aimed at an occurrence id that is not one is refused (it would match nothing).
    bad = raftcron(coord, "jobs", "kill", "alpha", "--occurrence", "yesterday")
    assert bad.returncode == 1 and "--occurrence: not an occurrence id" in bad.stderr
    assert raftcron(coord, "jobs", "delete", "beta").returncode == 0
    assert "beta" not in stored(coord)


@pytest.mark.parametrize(("flags", "message"), [
    (["--compact-retention", "soon"], "--compact-retention: must be a duration"),
    (["--tags", "ssd"], "--tags: expected k=v"),
])
def test_agent_refuses_bad_flags_before_touching_its_data_dir(
        tmp_path: Path, flags: list[str], message: str) -> None:
    res = subprocess.run([sys.executable, "-m", "scheduler.cli", "agent", *flags],
                         capture_output=True, text=True, check=False, timeout=60, cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert res.returncode == 2 and message in res.stderr
    assert list(tmp_path.iterdir()) == [], "nothing may be created on bad input"


def test_unreachable_store_is_a_clear_error() -> None:
    res = raftcron("127.0.0.1:1", "locks")
    assert res.returncode == 1 and "cannot reach the store" in res.stderr


def test_graceful_stop_finishes_the_run_and_leaves_no_lock(procs: ProcessGroup,
                                                           tmp_path: Path) -> None:
    from scheduler.admin import apply_jobs
    from scheduler.spec import load_jobs_text
    from scheduler.worker import Worker, WorkerConfig

    endpoint = start_coord(procs).endpoint
    marker = tmp_path / "started"
    spec = (f"jobs:\n  - name: slow\n    schedule: '* * * * * *'\n"
            f"    command: 'touch {marker}; sleep 2'\n")

    async def main() -> None:
        async with Client([endpoint]) as c:
            await apply_jobs(c, load_jobs_text(spec), prune=False, dry_run=False)
        w = Worker(WorkerConfig(name="graceful", endpoints=[endpoint],
                                log_dir=tmp_path / "logs"))
        stop = asyncio.Event()
        task = asyncio.create_task(w.run(stop))
        async def started() -> bool:
            return marker.exists()
        await until(started, 30, "the slow job to start")
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        async with Client([endpoint]) as c:
            assert (await c.get(keys.LOCKS, prefix=True)).kvs == []
            runs = await c.get(keys.runs_prefix("slow"), prefix=True)
            statuses = {json.loads(kv.value)["status"] for kv in runs.kvs}
            assert "succeeded" in statuses and not statuses & {"running", "claimed"}
            assert (await c.get(keys.WORKERS, prefix=True)).kvs == []
    asyncio.run(main())
