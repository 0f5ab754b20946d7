"""With ``--client-cert-auth``, a call without a token acts as the user named by its
client certificate's common name, as in etcd: the same etcdctl script against a real etcd
and a coord member, both with mutual TLS, gives the same outputs and exit codes.

The RPC layer hands the services the connection's verified certificate through
``CallContext.auth_context()``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.procs import ProcessGroup
from tests.tls.certs import make_ca
from tests.tls.conftest import Certs, start_tls_coord, start_tls_etcd

pytestmark = [
    pytest.mark.timeout(120),
]


def _script(port: int, certs: Certs, alice: tuple[Path, Path]) -> list[tuple[str, int, str]]:
    base = ["etcdctl", f"--endpoints=https://127.0.0.1:{port}", f"--cacert={certs.ca.cert}",
            "--command-timeout=5s"]
    as_alice = [f"--cert={alice[0]}", f"--key={alice[1]}"]
    as_client = [f"--cert={certs.client.cert}", f"--key={certs.client.key}"]
    out: list[tuple[str, int, str]] = []

    def ctl(who: list[str], *args: str) -> None:
        r = subprocess.run([*base, *who, *args], capture_output=True, text=True, timeout=30,
                           check=False, env={"ETCDCTL_API": "3",
                                             "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        err = "\n".join(ln for ln in r.stderr.splitlines() if ln.startswith("Error"))
        out.append((" ".join(args), r.returncode, r.stdout + err))

    ctl(as_client, "user", "add", "root", "--new-user-password=rootpw")
    ctl(as_client, "user", "add", "alice", "--no-password")
    ctl(as_client, "role", "add", "app")
    ctl(as_client, "role", "grant-permission", "--prefix=true", "app", "readwrite", "app/")
    ctl(as_client, "user", "grant-role", "alice", "app")
    ctl(as_client, "auth", "enable")
    ctl(as_alice, "put", "app/k", "v")  # the certificate's CN is the user
    ctl(as_alice, "get", "app/k")
    ctl(as_alice, "put", "pub/k", "v")
    ctl(as_alice, "--user=root:rootpw", "put", "pub/k", "v")  # a token wins over the CN
    ctl(as_client, "get", "app/k")  # CN "client": no such user
    ctl(as_alice, "user", "list")
    ctl(as_client, "--user=root:rootpw", "auth", "disable")
    return out


def test_the_certificate_common_name_is_the_user(procs: ProcessGroup, etcd_bin: str,
                                                 tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    certs = Certs(ca, ca.issue(tmp_path, "server"), ca.issue(tmp_path, "client"),
                  ca.issue(tmp_path, "old-client", expired=True),
                  make_ca(tmp_path, "other-ca").issue(tmp_path, "client"))
    alice = ca.issue(tmp_path, "alice")
    etcd_port = start_tls_etcd(procs, certs, etcd_bin)
    coord_port = start_tls_coord(procs, certs, "--client-cert-auth")
    assert _script(coord_port, certs, (alice.cert, alice.key)) == \
        _script(etcd_port, certs, (alice.cert, alice.key))
