"""raftcron's roles (`raftcron auth bootstrap`) as a user sets them up and meets them, on
coord and on a real etcd with auth enabled: the CLI run as each user (`--user`), a viewer
that cannot change a job or trigger a run, a worker identity that cannot write
/cron/jobs/, an admin that can, a worker that logs in and runs what the admin triggers, and
a worker started with a viewer identity that refuses to start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.procs import (
    REPO,
    Proc,
    ProcessGroup,
    free_port,
    start_coord,
    start_etcd,
    wait_until,
)

pytestmark = pytest.mark.timeout(240)

ROOT_PW = "r00t-S3cret-pw"
JOBS = """jobs:
  - name: nightly
    schedule: "0 3 * * *"
    command: [echo, nightly-ran]
  - name: slow
    schedule: "0 3 * * *"
    command: [sleep, "120"]
"""


def etcdctl(bin_: str, endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([bin_, f"--endpoints={endpoint}", "--command-timeout=5s", *args],
                          capture_output=True, text=True, timeout=30, check=False,
                          env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})


def raftcron(endpoint: str, *args: str, user: str | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    ident = ["--user", user] if user else []
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *ident, *args,
                           "--endpoints", endpoint],
                          capture_output=True, text=True, check=False, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})))


def error_line(res: subprocess.CompletedProcess[str]) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


def setup_users(ctl: str, ep: str) -> None:
    """root, then the roles by `raftcron auth bootstrap`, then one user per role, then
    auth on; bootstrap again as root finds everything in place."""
    def ok(*args: str) -> None:
        res = etcdctl(ctl, ep, *args)
        assert res.returncode == 0, (args, res.stdout, res.stderr)

    ok("user", "add", f"root:{ROOT_PW}")
    boot = raftcron(ep, "auth", "bootstrap")
    assert boot.returncode == 0, boot.stderr
    assert [ln.split()[:2] for ln in boot.stdout.splitlines()] == [
        ["raftcron-admin", "created"], ["raftcron-worker", "created"],
        ["raftcron-viewer", "created"]]
    for user, role in (("adm", "raftcron-admin"), ("wkr", "raftcron-worker"),
                       ("view", "raftcron-viewer")):
        ok("user", "add", f"{user}:{user}-pw")
        ok("user", "grant-role", user, role)
    ok("auth", "enable")
    again = raftcron(ep, "auth", "bootstrap", "-o", "json", user=f"root:{ROOT_PW}")
    assert again.returncode == 0, again.stderr
    assert [r["created"] for r in json.loads(again.stdout)] == [False, False, False]
    perms = etcdctl(ctl, ep, f"--user=root:{ROOT_PW}", "role", "get", "raftcron-worker")
    assert "[/cron/lock/, /cron/lock0) (prefix /cron/lock/)" in perms.stdout, perms.stdout


@pytest.fixture(params=["coord", "etcd"])
def store(request: pytest.FixtureRequest, procs: ProcessGroup, etcd_bin: str) -> Proc:
    if request.param == "coord":
        return start_coord(procs)
    return start_etcd(procs, etcd_bin=etcd_bin)


def test_roles_on_the_cli(store: Proc, procs: ProcessGroup, etcdctl_bin: str,
                          tmp_path: Path) -> None:
    ep = store.endpoint
    setup_users(etcdctl_bin, ep)
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(JOBS)

    # Without an identity: etcd's error, no data.
    anon = raftcron(ep, "jobs", "list")
    assert anon.returncode == 1 and "user name is empty" in error_line(anon)
    bad = raftcron(ep, "jobs", "list", user="adm:wrong-pw")
    assert bad.returncode == 1 and "authentication failed" in error_line(bad)
    assert "wrong-pw" not in bad.stderr + bad.stdout

    # The viewer reads, and changes nothing.
    denied = raftcron(ep, "apply", "-f", str(jobs), user="view:view-pw")
    assert denied.returncode == 1 and "permission denied" in error_line(denied)
    # The worker identity may not write job definitions.
    denied = raftcron(ep, "apply", "-f", str(jobs), user="wkr:wkr-pw")
    assert denied.returncode == 1 and "permission denied" in error_line(denied)
    # The admin can (the password from a file, as for a script).
    pwfile = tmp_path / "adm.pw"
    pwfile.write_text("adm-pw\n")
    applied = raftcron(ep, "--password-file", str(pwfile), "apply", "-f", str(jobs),
                       user="adm")
    assert applied.returncode == 0, applied.stderr
    listed = raftcron(ep, "jobs", "list", "-o", "json", user="view:view-pw")
    assert listed.returncode == 0 and "nightly" in listed.stdout, listed.stderr
    for args in (("jobs", "trigger", "nightly"), ("jobs", "suspend", "nightly"),
                 ("jobs", "delete", "nightly")):
        denied = raftcron(ep, *args, user="view:view-pw")
        assert denied.returncode == 1 and "permission denied" in error_line(denied), args
    # The environment names the user as the flags do (RAFTCRON_USER / RAFTCRON_PASSWORD).
    env_list = raftcron(ep, "jobs", "list", env={"RAFTCRON_USER": "view",
                                                 "RAFTCRON_PASSWORD": "view-pw"})
    assert env_list.returncode == 0, env_list.stderr

    # A worker with a viewer identity refuses to start, with one clear line.
    viewer_worker = raftcron(ep, "worker", "--name", "w-view", user="view:view-pw")
    assert viewer_worker.returncode == 1
    line = error_line(viewer_worker)
    assert "raftcron-worker" in line and "permission denied" in line, line

    # A worker with the worker role logs in and runs what the admin triggers.
    metrics = f"127.0.0.1:{free_port()}"
    worker = procs.spawn("worker", [
        sys.executable, "-m", "scheduler.cli", "--user", "wkr:wkr-pw", "worker",
        "--endpoints", ep, "--name", "w1", "--log-dir", str(tmp_path / "logs"),
        "--compact-retention", "0", "--listen-metrics", metrics], store.client_port,
        env={"PYTHONPATH": str(REPO)})
    wait_until(lambda: "w1" in raftcron(ep, "workers", user="view:view-pw").stdout
               or not worker.alive(), 30, "the worker's session")
    assert worker.alive(), worker.log()
    trig = raftcron(ep, "jobs", "trigger", "nightly", user="adm:adm-pw")
    assert trig.returncode == 0, trig.stderr

    def succeeded() -> bool:
        res = raftcron(ep, "jobs", "history", "nightly", "-o", "json", user="view:view-pw")
        return res.returncode == 0 and '"succeeded"' in res.stdout
    wait_until(succeeded, 60, "the triggered run recorded as succeeded", step=0.5)
    assert worker.alive(), worker.log()
    assert "permission denied" not in worker.log(), worker.log()
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as page:
        scraped = page.read().decode()
    assert "raftcron_" in scraped
    assert raftcron(ep, "jobs", "trigger", "slow", user="adm:adm-pw").returncode == 0
    wait_until(lambda: '"running"' in raftcron(ep, "jobs", "history", "slow", "-o", "json",
                                               user="view:view-pw").stdout,
               60, "the slow run started", step=0.5)
    kill = raftcron(ep, "jobs", "kill", "slow", user="view:view-pw")
    assert kill.returncode == 1 and "permission denied" in error_line(kill)
    killed = raftcron(ep, "jobs", "kill", "slow", user="adm:adm-pw")
    assert killed.returncode == 0, killed.stderr

    # The audit trail names the acting user of every change, and only of those that
    # happened (the viewer's and the worker identity's were refused).
    trail = raftcron(ep, "audit", "--job", "nightly", "-o", "json", user="view:view-pw")
    assert trail.returncode == 0, trail.stderr
    assert [(r["who"], r["action"]) for r in json.loads(trail.stdout)] == [
        ("adm", "trigger"), ("adm", "apply")]
    assert json.loads(trail.stdout)[0]["pid"] > 0
    slow = raftcron(ep, "audit", "--job", "slow", "-o", "json", user="view:view-pw")
    assert [(r["who"], r["action"]) for r in json.loads(slow.stdout)] == [
        ("adm", "kill"), ("adm", "trigger"), ("adm", "apply")], slow.stdout
    table = raftcron(ep, "audit", user="view:view-pw")
    assert table.returncode == 0 and "adm" in table.stdout, table.stderr
    outputs = [anon, bad, denied, applied, listed, env_list, viewer_worker, trig, kill,
               killed, trail, slow, table]
    assert worker.terminate() == 0

    # No password in any process's output, in the metrics, in the audit trail; nor, on
    # coord, anywhere in its data dir (etcd 3.4 writes the plain password in its WAL) or
    # in the jobs' output logs.
    texts = [worker.log(), store.log(), scraped, *(r.stdout + r.stderr for r in outputs)]
    for secret in (ROOT_PW, "adm-pw", "wkr-pw", "view-pw", "wrong-pw"):
        assert not [t for t in texts if secret in t], secret
    if "scheduler.cli" in " ".join(store.argv):
        data = [p for d in (procs.workdir / f"{store.name}-data", tmp_path / "logs")
                for p in d.rglob("*") if p.is_file()]
        assert data
        for path in data:
            blob = path.read_bytes()
            assert ROOT_PW.encode() not in blob and b"adm-pw" not in blob, path
