"""docs/dashboard-security.md "From nothing, with curl", run as written (a free port in
place of 8080; the endpoints in RAFTCRON_ENDPOINTS / ETCDCTL_ENDPOINTS, as the section
says) against a coord agent and a real etcd; and the second block without its login line
on a store without auth, as the section says it works."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dashboard.conftest import ENV
from tests.helpers.procs import (
    REPO,
    ProcessGroup,
    free_port,
    port_open,
    start_coord,
    start_etcd,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)


def blocks() -> list[str]:
    text = (REPO / "docs" / "dashboard-security.md").read_text()
    start = text.index("\n## From nothing, with curl")
    section = text[start:text.index("\n## ", start + 1)]
    found = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert len(found) == 2
    return list(found)


def shell(tmp_path: Path, store: str, port: int) -> dict[str, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "raftcron").write_text(f"#!/bin/sh\nexec {sys.executable} -m scheduler.cli \"$@\"\n")
    (bindir / "raftcron").chmod(0o755)
    (tmp_path / "jobs.yaml").write_text(
        'jobs:\n  - name: hello\n    schedule: "@every 1h"\n    command: [echo, hi]\n')
    return dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", PYTHONPATH=str(REPO),
                RAFTCRON_ENDPOINTS=store, ETCDCTL_ENDPOINTS=store, ETCDCTL_API="3")


def run_script(script: str, env: dict[str, str], cwd: Path) -> str:
    res = subprocess.run(["sh", "-e", "-c", script], capture_output=True, text=True, env=env,
                         cwd=cwd, check=False, timeout=90)
    assert res.returncode == 0, (script, res.stdout, res.stderr)
    return res.stdout


@pytest.mark.parametrize("kind", ["coord", "etcd"])
def test_curl_session_as_documented(kind: str, procs: ProcessGroup, etcd_bin: str,
                                    etcdctl_bin: str, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (the documented commands use it)")
    store = start_coord(procs) if kind == "coord" else start_etcd(procs, etcd_bin=etcd_bin)
    port = free_port()
    env = shell(tmp_path, store.endpoint, port)
    (tmp_path / "bin" / "etcdctl").symlink_to(etcdctl_bin)
    setup, session = (b.replace("8080", str(port)) for b in blocks())
    for line in [ln for ln in setup.splitlines() if ln.strip()]:
        if " dashboard " in line:
            dash = procs.spawn("dashboard", ["sh", "-c", f"exec {line}"], port,
                               env={**ENV, **{k: env[k] for k in (
                                   "PATH", "RAFTCRON_ENDPOINTS")}})
            wait_until(lambda: port_open(port) or not dash.alive(), 30, "the dashboard")  # noqa: B023
            assert dash.alive(), dash.log()
            continue
        run_script(line, env, tmp_path)
    out = run_script(session, env, tmp_path)
    assert out.count('"ok": true') == 4, out  # login, suspend, resume, logout
    assert "disk replacement" in out and '"user": "ops"' in out
    assert "ROOT-PW" not in dash.log() and "OPS-PW" not in dash.log()


def test_curl_without_store_auth(procs: ProcessGroup, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (the documented commands use it)")
    store = start_coord(procs)
    port = free_port()
    env = shell(tmp_path, store.endpoint, port)
    subprocess.run(["raftcron", "apply", "-f", "jobs.yaml"], env=env, cwd=tmp_path,
                   check=True, capture_output=True, timeout=60)
    dash = procs.spawn("dashboard", [sys.executable, "-m", "scheduler.cli", "dashboard",
                                     "--endpoints", store.endpoint, "--listen",
                                     f"127.0.0.1:{port}"], port, env=ENV)
    wait_until(lambda: port_open(port) or not dash.alive(), 30, "the dashboard")
    session = blocks()[1].replace("8080", str(port))
    without_login = "\n".join(ln for ln in session.splitlines()
                              if "/api/v1/login" not in ln)
    out = run_script(without_login.replace("--user ops:OPS-PW ", ""), env, tmp_path)
    assert out.count('"ok": true') == 3, out  # suspend, resume, logout
    assert "disk replacement" in out
