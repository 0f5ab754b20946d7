"""Passwords never leave the API layer in the clear (etcd's CVE-2021-28235 was a password
on a debug page): after users are added, logged in, refused and given a new password,
no password appears in the member's log output or anywhere in its data directory (the
WAL carries the bcrypt hash), and a refused login says nothing of the password."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers.procs import ProcessGroup
from tests.process.cluster import CoordCluster

pytestmark = pytest.mark.timeout(120)

SECRETS = ("S3cret-root-pw-4242", "Alice-pw-0x5eed", "Wrong-guess-7f7f", "Newer-alice-9a9a")


def test_no_password_in_logs_or_data_dir(procs: ProcessGroup, etcdctl_bin: str) -> None:
    root_pw, alice_pw, wrong_pw, new_pw = SECRETS
    # No snapshot: every request stays in the WAL, where a plain password would be.
    cluster = CoordCluster(procs, size=1, faults=False)
    cluster.start()
    ep = cluster.endpoints[0]

    def ctl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([etcdctl_bin, f"--endpoints={ep}", "--command-timeout=5s", *args],
                              input=stdin, capture_output=True, text=True, timeout=30,
                              check=False, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})

    for args in (("user", "add", f"root:{root_pw}"), ("user", "add", f"alice:{alice_pw}"),
                 ("user", "grant-role", "root", "root"), ("auth", "enable"),
                 (f"--user=root:{root_pw}", "put", "k", "v")):
        r = ctl(*args)
        assert r.returncode == 0, (args, r.stderr)
    refused = ctl(f"--user=alice:{wrong_pw}", "get", "k")
    assert refused.returncode == 2
    assert "Error: etcdserver: authentication failed, invalid user ID or password" in \
        refused.stderr and wrong_pw not in refused.stderr
    r = ctl(f"--user=root:{root_pw}", "user", "passwd", "alice", "--interactive=false",
            stdin=f"{new_pw}\n")
    assert r.returncode == 0, r.stderr
    assert ctl(f"--user=alice:{new_pw}", "get", "k").returncode == 1  # no role: denied
    member = cluster.members["n1"]
    cluster.kill9("n1")
    assert member.proc is not None
    output = member.proc.log()
    assert output  # the member logged while this ran
    for secret in SECRETS:
        assert secret not in output, f"{secret!r} in the member's log"
        for path in member.data.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), f"{secret!r} in {path}"
