"""Fixtures of the TLS tests: one set of certificates for the session's tests (made with
``cryptography``) and a coord member with ``--client-cert-auth`` shared by a module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.procs import (
    REPO,
    ProcessGroup,
    coord_argv,
    free_port,
    port_open,
    process_group,
    wait_until,
)
from tests.tls.certs import CA, Pair, make_ca


@dataclass(frozen=True)
class Certs:
    ca: CA
    server: Pair
    client: Pair
    expired: Pair
    stranger: Pair
    """A client certificate from a CA the server does not trust."""


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    ca = make_ca(d)
    other = make_ca(d, "other-ca")
    return Certs(ca, ca.issue(d, "server"), ca.issue(d, "client"),
                 ca.issue(d, "old-client", expired=True), other.issue(d, "client"))


def tls_argv(name: str, data: Path, cport: int, pport: int, certs: Certs,
             *extra: str) -> list[str]:
    return [*coord_argv(name, data, cport, pport),
            "--cert-file", str(certs.server.cert), "--key-file", str(certs.server.key),
            "--trusted-ca-file", str(certs.ca.cert), *extra]


def start_tls_coord(group: ProcessGroup, certs: Certs, *extra: str) -> int:
    cport, pport = free_port(), free_port()
    proc = group.spawn("n1", tls_argv("n1", group.workdir / "n1-data", cport, pport, certs,
                                      *extra), cport, env={"PYTHONPATH": str(REPO)})
    wait_until(lambda: port_open(cport) or not proc.alive(), 30, f"coord on :{cport}")
    assert proc.alive(), proc.log()
    return cport


@pytest.fixture(scope="module")
def mtls_port(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[int]:
    """A coord member with ``--client-cert-auth`` on."""
    with process_group(tmp_path_factory.mktemp("mtls")) as group:
        yield start_tls_coord(group, certs, "--client-cert-auth")




def start_tls_etcd(group: ProcessGroup, certs: Certs, etcd_bin: str) -> int:
    """A real etcd on loopback with TLS and ``--client-cert-auth`` on its client port
    (plaintext peers: one member); returns the client port once it listens."""
    cport, pport = free_port(), free_port()
    argv = [etcd_bin, "--name", "e1", "--data-dir", str(group.workdir / "e1-data"),
            "--listen-client-urls", f"https://127.0.0.1:{cport}",
            "--advertise-client-urls", f"https://127.0.0.1:{cport}",
            "--listen-peer-urls", f"http://127.0.0.1:{pport}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
            "--initial-cluster", f"e1=http://127.0.0.1:{pport}",
            "--cert-file", str(certs.server.cert), "--key-file", str(certs.server.key),
            "--trusted-ca-file", str(certs.ca.cert), "--client-cert-auth",
            "--log-level", "error"]
    proc = group.spawn("e1", argv, cport, env={"ETCD_UNSUPPORTED_ARCH": "",
                                               "ETCDCTL_API": "3"})
    wait_until(lambda: port_open(cport) or not proc.alive(), 30, f"etcd on :{cport}")
    assert proc.alive(), proc.log()
    return cport
