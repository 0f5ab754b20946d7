"""aetcd (an independent client library) as users with and without permissions, a watch,
wrong and missing credentials, and a token made invalid by a password change: the same
results from a real etcd and from coord."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.compat.harness import Pair
from tests.compat.harness_servers import Server
from tests.helpers.procs import REPO

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(120)]

SETUP = (("user", "add", "root", "--new-user-password=rootpw"),
         ("user", "add", "alice", "--new-user-password=apw"),
         ("role", "add", "app"),
         ("role", "grant-permission", "--prefix=true", "app", "readwrite", "app/"),
         ("user", "grant-role", "alice", "app"),
         ("auth", "enable"))


def _run(server: Server) -> list[list[object]]:
    for args in SETUP:
        r = server.ctl(list(args))
        assert r.rc == 0, (args, r.stderr)
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.auth.aetcd_auth_driver",
         server.endpoint],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert driver.stdout is not None and driver.stdin is not None
        assert driver.stdout.readline().strip() == "ready", driver.stderr
        r = server.ctl(["--user=root:rootpw", "user", "passwd", "alice",
                        "--interactive=false"], stdin=b"newpw\n")
        assert r.rc == 0, r.stderr
        out, err = driver.communicate("go\n", timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, err
    steps: list[list[object]] = json.loads(out)
    return steps


def test_aetcd_as_users_like_etcd(fresh_pair: Pair) -> None:
    ref, target = (_run(s) for s in fresh_pair.servers)
    assert target == ref
    assert ref[0] == ["alice put app/a", "ok"]  # the script did run as alice
    assert ref[8] == ["old token after passwd", {"error": "UnauthenticatedError",
                                                 "detail": "etcdserver: invalid auth token"}]
