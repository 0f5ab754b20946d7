"""aetcd as a user whose permission is revoked while its watch is open: on coord the
watch gets nothing written after the revoke (coord cancels it at once; aetcd drops the
cancel notice silently, so what its user sees is that no event comes), on a real etcd
3.4 it still does (etcd checks a watch only when it is created). Token refresh with aetcd
(a new login after the old token died) is in tests/compat/test_auth_aetcd.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.procs import REPO, ProcessGroup, start_coord, start_etcd

pytestmark = pytest.mark.timeout(90)

OBSERVE = 3.0
"""Seconds the watch is observed after the revoke and the write."""


def ctl(bin_: str, ep: str, *args: str) -> None:
    res = subprocess.run([bin_, f"--endpoints={ep}", *args], capture_output=True, text=True,
                         timeout=30, check=False, env={"ETCDCTL_API": "3"})
    assert res.returncode == 0, (args, res.stderr)


@pytest.mark.parametrize("kind", ["coord", "etcd"])
def test_aetcd_watch_after_revoke(kind: str, procs: ProcessGroup, etcd_bin: str,
                                  etcdctl_bin: str) -> None:
    ep = (start_coord(procs) if kind == "coord" else start_etcd(procs, etcd_bin=etcd_bin)
          ).endpoint
    for args in (["user", "add", "root:rootpw"], ["user", "add", "alice:apw"],
                 ["role", "add", "app"],
                 ["role", "grant-permission", "--prefix=true", "app", "readwrite", "app/"],
                 ["user", "grant-role", "alice", "app"], ["auth", "enable"]):
        ctl(etcdctl_bin, ep, *args)
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.auth.aetcd_revoke_driver", ep, str(OBSERVE)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert driver.stdout is not None
        assert driver.stdout.readline().strip() == "ready", driver.stderr
        ctl(etcdctl_bin, ep, "--user=root:rootpw", "role", "revoke-permission", "app", "app/",
            "--prefix=true")
        ctl(etcdctl_bin, ep, "--user=root:rootpw", "put", "app/after", "after")
        out, err = driver.communicate("go\n", timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, err
    got = json.loads(out)
    assert got["before"] == ["before"]
    assert "permission denied" in got["read"], got
    assert got["after"] == ([] if kind == "coord" else ["after"]), got
