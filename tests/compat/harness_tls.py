"""``COMPAT_TLS=1``: the differential over TLS. The reference etcd and coord each serve
their client port with a certificate from a CA made for that server (``tests.tls.certs``),
with ``--client-cert-auth``; every etcdctl step dials ``https://`` with ``--cacert``,
``--cert`` and ``--key``. Peer ports stay plaintext (single members). Run by
``tests/tls/test_acceptance_etcdctl.py``; by hand: ``COMPAT_TLS=1 pytest tests/compat``."""

from __future__ import annotations

import os

from tests.helpers.procs import (
    REPO,
    Proc,
    ProcessGroup,
    coord_argv,
    free_port,
    port_open,
    wait_until,
)
from tests.tls.certs import make_ca


def compat_tls() -> bool:
    return os.environ.get("COMPAT_TLS", "") == "1"


def start_tls_side(kind: str, name: str, group: ProcessGroup,
                   etcd_bin: str) -> tuple[Proc, int, list[str]]:
    """A fresh single member of ``kind`` (etcd|coord) with client TLS and client
    certificate auth: its process, peer port and the etcdctl flags that reach it."""
    d = group.workdir / "tls"
    ca = make_ca(d)
    server, client = ca.issue(d, "server"), ca.issue(d, "client")
    server_flags = ["--cert-file", str(server.cert), "--key-file", str(server.key),
                    "--trusted-ca-file", str(ca.cert), "--client-cert-auth"]
    cport, pport = free_port(), free_port()
    data = group.workdir / f"{name}-data"
    if kind == "etcd":
        argv = [etcd_bin, "--name", name, "--data-dir", str(data),
                "--listen-client-urls", f"https://127.0.0.1:{cport}",
                "--advertise-client-urls", f"https://127.0.0.1:{cport}",
                "--listen-peer-urls", f"http://127.0.0.1:{pport}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
                "--initial-cluster", f"{name}=http://127.0.0.1:{pport}",
                "--log-level", "error", *server_flags]
        env = {"ETCD_UNSUPPORTED_ARCH": "", "ETCDCTL_API": "3"}
    else:
        argv = [*coord_argv(name, data, cport, pport), *server_flags]
        env = {"PYTHONPATH": str(REPO)}
    proc = group.spawn(name, argv, cport, env=env)
    wait_until(lambda: port_open(cport) or not proc.alive(), 30, f"{kind} on :{cport}")
    if not proc.alive():
        raise RuntimeError(f"{kind} exited early:\n{proc.log()}")
    ctl = [f"--cacert={ca.cert}", f"--cert={client.cert}", f"--key={client.key}"]
    return proc, pport, ctl
