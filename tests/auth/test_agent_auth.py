"""`raftcron agent --user`: the agent's own worker logs in to its member; with a viewer
identity the agent refuses to start its worker (one `Error:` line, exit 1), with the
worker role it runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.procs import REPO, ProcessGroup, free_port, port_open, wait_until

pytestmark = pytest.mark.timeout(120)


def test_agent_with_viewer_and_worker_identities(procs: ProcessGroup, etcdctl_bin: str,
                                                  tmp_path: Path) -> None:
    cport, pport = free_port(), free_port()
    ep = f"127.0.0.1:{cport}"
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def agent(*ident: str) -> list[str]:
        return [sys.executable, "-m", "scheduler.cli", *ident, "agent", "--name", "a1",
                "--data-dir", str(tmp_path / "a1"), "--listen-client", ep,
                "--listen-peer", f"127.0.0.1:{pport}", "--log-dir", str(tmp_path / "logs"),
                "--compact-retention", "0"]

    first = procs.spawn("agent", agent(), cport, env={"PYTHONPATH": str(REPO)})
    wait_until(lambda: port_open(cport) or not first.alive(), 30, "the agent's member")

    def ok(*args: str) -> None:
        res = subprocess.run([etcdctl_bin, f"--endpoints={ep}", *args], capture_output=True,
                             text=True, timeout=30, check=False, env={"ETCDCTL_API": "3"})
        assert res.returncode == 0, (args, res.stderr)

    ok("user", "add", "root:rootpw")
    boot = subprocess.run([sys.executable, "-m", "scheduler.cli", "auth", "bootstrap",
                           "--endpoints", ep], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert boot.returncode == 0, boot.stderr
    for user, role in (("wkr", "raftcron-worker"), ("view", "raftcron-viewer")):
        ok("user", "add", f"{user}:{user}-pw")
        ok("user", "grant-role", user, role)
    ok("auth", "enable")
    assert first.terminate() == 0, first.log()

    refused = subprocess.run(agent("--user", "view:view-pw"), capture_output=True,
                             text=True, env=env, timeout=60, check=False)
    assert refused.returncode == 1, refused.stderr
    errors = [ln for ln in refused.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "raftcron-worker" in errors[0], refused.stderr
    assert "Traceback" not in refused.stderr

    runs = procs.spawn("agent", agent("--user", "wkr:wkr-pw"), cport,
                       env={"PYTHONPATH": str(REPO)})

    def listed() -> bool:
        res = subprocess.run([sys.executable, "-m", "scheduler.cli", "--user", "view:view-pw",
                              "workers", "--endpoints", ep], capture_output=True, text=True,
                             env=env, timeout=60, check=False)
        return "a1" in res.stdout or not runs.alive()
    wait_until(listed, 30, "the agent's worker session", step=0.3)
    assert runs.alive(), runs.log()
    assert runs.terminate() == 0, runs.log()
    assert "wkr-pw" not in runs.log() and "view-pw" not in refused.stderr
