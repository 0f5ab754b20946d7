"""README "Authentication", run as written against a coord member and a real etcd (the
endpoints in RAFTCRON_ENDPOINTS / ETCDCTL_ENDPOINTS, as the section says): every command
exits 0; the worker line runs until its session shows, then stops."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.procs import REPO, ProcessGroup, start_coord, start_etcd, wait_until

pytestmark = pytest.mark.timeout(180)


def commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    start = text.index("\n## Authentication")
    section = text[start:text.index("\n## ", start + 1)]
    block = re.findall(r"```sh\n(.*?)```", section, flags=re.S)[0]
    return [ln for ln in block.splitlines() if ln.strip()]


@pytest.mark.parametrize("kind", ["coord", "etcd"])
def test_readme_authentication(kind: str, procs: ProcessGroup, etcd_bin: str,
                               etcdctl_bin: str, tmp_path: Path) -> None:
    store = start_coord(procs) if kind == "coord" else start_etcd(procs, etcd_bin=etcd_bin)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "raftcron").write_text(f"#!/bin/sh\nexec {sys.executable} -m scheduler.cli \"$@\"\n")
    (bindir / "raftcron").chmod(0o755)
    (bindir / "etcdctl").symlink_to(etcdctl_bin)
    (tmp_path / "jobs.yaml").write_text(
        'jobs:\n  - name: hello\n    schedule: "@every 1h"\n    command: [echo, hi]\n')
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", PYTHONPATH=str(REPO),
               RAFTCRON_ENDPOINTS=store.endpoint, ETCDCTL_ENDPOINTS=store.endpoint,
               ETCDCTL_API="3")
    lines = commands()
    assert len(lines) >= 12
    for line in lines:
        if " worker " in line:
            worker = procs.spawn("worker", ["sh", "-c", f"exec {line}"], store.client_port,
                                 env={k: env[k] for k in ("PATH", "PYTHONPATH",
                                                          "RAFTCRON_ENDPOINTS")})
            wait_until(lambda: "w1" in subprocess.run(
                ["raftcron", "--user", "viewer:V-PW", "workers"], capture_output=True,
                text=True, env=env, cwd=tmp_path, check=False, timeout=30).stdout
                or not worker.alive(), 30,  # noqa: B023 - used within this iteration
                "the worker's session")
            assert worker.alive(), worker.log()
            continue
        res = subprocess.run(["sh", "-c", line], capture_output=True, text=True, env=env,
                             cwd=tmp_path, check=False, timeout=60)
        assert res.returncode == 0, (line, res.stdout, res.stderr)
        if line.endswith(" audit"):
            assert "ops" in res.stdout and "apply" in res.stdout, res.stdout
    assert worker.terminate() == 0, worker.log()
    assert "W1-PW" not in worker.log()
