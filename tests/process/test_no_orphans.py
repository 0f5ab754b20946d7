"""The issue #13 acceptance scenario: the holder of a long `forbid` job is killed with
kill -9, and no second run of that job starts while any process of the first is alive (its
shell had a forking child; both used to survive the worker for the job's whole length while
another agent started the next occurrence). A later occurrence does run on another agent."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from coord.client import Client
from tests.helpers.procs import ProcessGroup, free_port, wait_until
from tests.process.test_field_start import start_cluster
from tests.scheduler.test_worker_death import _group

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _starts(out: Path) -> list[tuple[float, int, str]]:
    """(start time, process group, occurrence) of every run so far."""
    if not out.exists():
        return []
    rows = []
    for line in out.read_text().splitlines():
        t, pgid, occ = line.split()
        rows.append((float(t), int(pgid), occ))
    return rows


async def _holder(endpoint: str) -> str | None:
    async with Client([endpoint], timeout=5) as c:
        kv = await c.get_one("/cron/lock/long")
        return None if kv is None else str(json.loads(kv.value)["worker"])


def test_kill_9_of_a_forbid_jobs_holder_leaves_no_overlap(procs: ProcessGroup) -> None:
    out = procs.workdir / "starts.txt"
    jobs = procs.workdir / "jobs.yaml"
    # $$ is the job's shell: it leads the job's process group.
    jobs.write_text(
        "jobs:\n  - name: long\n    schedule: '@every 5s'\n    concurrency: forbid\n"
        f"    command: 'echo $(date +%s.%N) $$ $RAFTCRON_OCCURRENCE >> {out}; "
        "(sleep 45) & sleep 45'\n")
    ports = {i: (free_port(), free_port()) for i in (1, 2, 3)}
    agents = start_cluster(procs, [1, 2, 3], jobs, ports)
    wait_until(lambda: len(_starts(out)) >= 1, 90, "the long job to start")
    _, pgid, first_occ = _starts(out)[0]
    wait_until(lambda: len(_group(pgid)) >= 3, 10, "the job's shell and its two sleepers")
    holder = asyncio.run(_holder(agents[1].endpoint))
    assert holder is not None
    victim = agents[int(holder.removeprefix("n"))]
    survivors = [a for a in agents.values() if a is not victim]

    os.kill(victim.popen.pid, signal.SIGKILL)  # the agent process alone, as a crash would
    victim.popen.wait(timeout=10)
    killed_at = last_alive = time.time()
    while _group(pgid) and time.time() - killed_at < 60:  # poll, bounded
        last_alive = time.time()
        time.sleep(0.01)
    assert not _group(pgid), "the killed agent's job outlived it"
    # The supervisor kills at once (0.25 s grace); the bound is a few seconds, not a
    # timing guess on a loaded 2-core machine: a job nobody kills never dies at all.
    assert last_alive - killed_at < 3.0, "the job's group took over 3 s to die"

    # Another agent takes the job over once the dead holder's lease expires.
    wait_until(lambda: any(occ != first_occ for _, _, occ in _starts(out)), 90,
               "a later occurrence to start elsewhere\n" + survivors[0].log()[-3000:])
    later = [(t, occ) for t, _, occ in _starts(out) if occ != first_occ]
    assert all(t > last_alive for t, _ in later), (later, last_alive)
    assert all(a.alive() for a in survivors)
