"""Fixtures of the dashboard tests: a real single-node agent, and `raftcron dashboard`
against it, both as processes a user would start (torn down with the process group).

Other dashboard test modules (browser, actions, auth) add their own fixtures in their own
helper modules; the functions below are for them too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.procs import (
    REPO,
    Proc,
    ProcessGroup,
    free_port,
    port_open,
    process_group,
    wait_until,
)

ENV = {"PYTHONPATH": str(REPO), "RAFTCRON_LOG_LEVEL": "info"}

JOBS = """\
jobs:
  - name: tick
    schedule: '@every 2s'
    command: 'echo tick $RAFTCRON_OCCURRENCE'
    tags: {team: core}
  - name: nightly
    schedule: '30 2 1 1 *'
    timezone: Europe/Berlin
    command: ['true']
  - name: slow
    schedule: '0 0 1 1 *'
    command: 'echo started; sleep 60'
"""
"""The agent fixture's jobs: ``tick`` runs every 2 s; ``nightly`` and ``slow`` do not run
in a test unless triggered (``slow`` then holds its lock for a minute): both fire on January
1st only (a daily time would fall inside some test runs)."""


@dataclass
class Dashboard:
    proc: Proc
    url: str
    """``http://127.0.0.1:PORT`` (no trailing slash)."""

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, Any]:
        """GET ``path``: (status, decoded JSON body)."""
        return request(self.url + path, timeout=timeout)


def request(url: str, method: str = "GET", body: Any = None,
            headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One HTTP request: (status, JSON body, or the text when it is not JSON)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def start_agent(procs: ProcessGroup, name: str = "a1", jobs: str | None = JOBS,
                *extra: str, ident: Sequence[str] = (),
                ports: tuple[int, int] | None = None) -> Proc:
    """`raftcron [IDENT] agent` (single node) with ``jobs`` applied at start; waits until
    it listens. ``ports`` (client, peer) are free ones unless given."""
    cport, pport = ports or (free_port(), free_port())
    argv = [sys.executable, "-m", "scheduler.cli", *ident, "agent", "--name", name,
            "--data-dir", str(procs.workdir / f"{name}-data"),
            "--log-dir", str(procs.workdir / f"{name}-logs"),
            "--listen-client", f"127.0.0.1:{cport}", "--listen-peer", f"127.0.0.1:{pport}",
            *extra]
    if jobs is not None:
        path = procs.workdir / f"{name}-jobs.yaml"
        path.write_text(jobs)
        argv += ["--jobs", str(path)]
    proc = procs.spawn(name, argv, cport, env=ENV)
    wait_until(lambda: port_open(cport) or not proc.alive(), 30, f"agent on :{cport}")
    assert proc.alive(), proc.log()
    return proc


def start_dashboard(procs: ProcessGroup, endpoints: str, *extra: str,
                    wait: bool = True, user: str | None = None) -> Dashboard:
    """`raftcron [--user USER] dashboard --endpoints ENDPOINTS --listen 127.0.0.1:<free
    port>`; waits until it listens."""
    port = free_port()
    argv = [sys.executable, "-m", "scheduler.cli", *(["--user", user] if user else []),
            "dashboard", "--endpoints", endpoints, "--listen", f"127.0.0.1:{port}", *extra]
    proc = procs.spawn("dashboard", argv, port, env=ENV)
    dash = Dashboard(proc, f"http://127.0.0.1:{port}")
    if wait:
        wait_until(lambda: port_open(port) or not proc.alive(), 30, f"dashboard on :{port}")
        assert proc.alive(), proc.log()
    return dash


def cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """`raftcron ARGS...` as a user runs it: (returncode, stdout, stderr)."""
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **ENV}, cwd=str(REPO), check=False)


@pytest.fixture
def agent(procs: ProcessGroup) -> Proc:
    """A single-node agent (tags ``team=core``) running :data:`JOBS`."""
    return start_agent(procs, "a1", JOBS, "--tags", "team=core")


@pytest.fixture
def dashboard(procs: ProcessGroup, agent: Proc) -> Dashboard:
    """`raftcron dashboard` on the :func:`agent`."""
    return start_dashboard(procs, agent.endpoint)


@pytest.fixture(scope="module")
def shared_dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """An agent and a dashboard for a whole module, for tests that only read and change
    nothing (bad requests, for one): one start-up instead of one per test."""
    with process_group(tmp_path_factory.mktemp("dashboard")) as group:
        agent = start_agent(group, "a1", JOBS, "--tags", "team=core")
        yield start_dashboard(group, agent.endpoint)


@pytest.fixture
def workdir(procs: ProcessGroup) -> Path:
    return procs.workdir
