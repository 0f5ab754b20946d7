"""A dashboard to browse in the page tests: a real single-node agent running jobs, and
`raftcron dashboard` on it, both processes as a user starts them (tests/dashboard/conftest.py).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coord.client import Client
from scheduler import keys
from scheduler.admin import history
from scheduler.claim import LockHolder, RunRecord
from tests.dashboard.conftest import ENV, Dashboard, start_agent, start_dashboard
from tests.helpers.procs import REPO, Proc, ProcessGroup, port_open, process_group, wait_until

JOBS = """\
jobs:
  - name: tick
    schedule: '@every 3s'
    command: 'echo tick $RAFTCRON_OCCURRENCE'
  - name: hold
    schedule: '0 0 1 1 *'
    command: 'echo holding the lock; sleep 60'
  - name: chatty
    schedule: '0 0 1 1 *'
    command: 'for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; sleep 0.5; done'
  - name: markup
    schedule: '0 0 1 1 *'
    command: 'echo "<script>window.__xss=1</script><img src=x1 onerror=window.__xss=2>"'
    env: {NOTE: '<img src=x3 onerror=window.__xss=3>'}
  - name: monthly
    schedule: '30 2 1 * *'
    timezone: Europe/Berlin
    command: ['true']
    tags: {team: reports}
"""
"""``tick`` gives the pages history; ``hold``, ``chatty`` and ``markup`` run only when
triggered (a lock held for a minute; ten lines of output over five seconds; output and an
environment value that are markup); ``monthly``'s next ten fire
times in Berlin always span a DST change (and its tag keeps it off this worker)."""


@dataclass
class Site:
    agent: Proc
    dashboard: Dashboard
    group: ProcessGroup
    worker: str = "a1"

    def restart_dashboard(self) -> None:
        """kill -9 the dashboard, then start it again on the same port (as a supervisor
        would); returns once it listens."""
        old = self.dashboard.proc
        old.kill9()
        proc = self.group.spawn("dashboard", old.argv, old.client_port, env=ENV)
        wait_until(lambda: port_open(old.client_port) or not proc.alive(), 30,
                   "the dashboard to listen again")
        assert proc.alive(), proc.log()
        self.dashboard = Dashboard(proc, self.dashboard.url)

    @property
    def url(self) -> str:
        return self.dashboard.url

    @property
    def endpoint(self) -> str:
        return self.agent.endpoint

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``raftcron ARGS --endpoints <agent>`` as a user types it."""
        res = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", *args, "--endpoints", self.endpoint],
            capture_output=True, text=True, check=False, timeout=60,
            env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert "Traceback" not in res.stderr, res.stderr
        return res

    def store(self, fn: Any) -> Any:
        """``fn(client)`` against the agent's store. In a thread of its own: Playwright's
        sync API keeps an event loop running in the test's thread."""
        async def body() -> Any:
            async with Client([self.endpoint], timeout=5) as c:
                return await fn(c)
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, body()).result(timeout=30)

    def lock(self, job: str) -> tuple[LockHolder, int] | None:
        """The job's lock holder and fencing token (None if free)."""
        kv = self.store(lambda c: c.get_one(keys.lock_key(job)))
        return None if kv is None else (LockHolder.decode(kv.value), kv.create_revision)

    def runs(self, job: str) -> list[RunRecord]:
        return list(self.store(lambda c: history(c, job)))

    def wait_run(self, job: str, timeout: float = 30) -> RunRecord:
        """The job's newest run, once there is one."""
        found: list[RunRecord] = []

        def some() -> bool:
            found[:] = self.runs(job)
            return bool(found)
        wait_until(some, timeout, f"a run of {job}\n{self.agent.log()[-2000:]}", step=0.2)
        return found[0]


def open_site(workdir: Path, jobs: str = JOBS) -> Iterator[Site]:
    with process_group(workdir) as group:
        agent = start_agent(group, "a1", jobs)
        dash = start_dashboard(group, agent.endpoint)
        wait_until(lambda: dash.get("/api/v1/jobs")[0] == 200 or not dash.proc.alive(), 30,
                   "the dashboard to read the store")
        assert dash.proc.alive(), dash.proc.log()
        yield Site(agent, dash, group)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One agent and dashboard for a module's page tests (each test opens its own browser)."""
    yield from open_site(Path(tmp_path_factory.mktemp("site")))
