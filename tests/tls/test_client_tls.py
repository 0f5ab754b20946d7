"""The client side of TLS, with etcdctl's names (``--cacert``, ``--cert``, ``--key``,
``--insecure-skip-tls-verify``) and ``https://`` endpoints: the coord client against coord
and against a real etcd, both with ``--client-cert-auth``; etcdctl against coord; the
raftcron CLI. Refusals are bounded by the client's timeout."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from coord.client import Client, ClientError, ClientTLS
from tests.helpers.procs import REPO, process_group
from tests.tls.conftest import Certs, start_tls_etcd

TIMEOUT = 3.0


def mtls(certs: Certs) -> ClientTLS:
    return ClientTLS(certs.ca.cert, certs.client.cert, certs.client.key)


async def round_trip(endpoint: str, tls: ClientTLS | None, key: bytes) -> bytes | None:
    async with Client([endpoint], timeout=TIMEOUT, tls=tls) as c:
        await c.put(key, b"v-" + key)
        got = await c.get(key)
        return got.kvs[0].value if got.kvs else None


@pytest.fixture(scope="module")
def etcd_port(tmp_path_factory: pytest.TempPathFactory, certs: Certs,
              etcd_bin: str) -> Iterator[int]:
    with process_group(tmp_path_factory.mktemp("etcd-tls")) as group:
        yield start_tls_etcd(group, certs, etcd_bin)


@pytest.mark.parametrize("server", ["coord", "etcd"])
def test_the_coord_client_speaks_mutual_tls(server: str, mtls_port: int, etcd_port: int,
                                            certs: Certs) -> None:
    port = mtls_port if server == "coord" else etcd_port
    got = asyncio.run(round_trip(f"https://127.0.0.1:{port}", mtls(certs), server.encode()))
    assert got == b"v-" + server.encode()
    # Without a client certificate both refuse the client.
    with pytest.raises(ClientError):
        asyncio.run(round_trip(f"https://127.0.0.1:{port}", ClientTLS(certs.ca.cert), b"x"))


def test_an_https_endpoint_without_a_ca_verifies_against_the_system_cas(
        mtls_port: int) -> None:
    """https:// alone is TLS with the system's CAs, which do not know the test CA."""
    with pytest.raises(ClientError):
        asyncio.run(round_trip(f"https://127.0.0.1:{mtls_port}", None, b"x"))


def test_insecure_skip_tls_verify_encrypts_without_verifying(mtls_port: int,
                                                             certs: Certs) -> None:
    tls = ClientTLS(cert=certs.client.cert, key=certs.client.key, insecure_skip_verify=True)
    assert asyncio.run(round_trip(f"127.0.0.1:{mtls_port}", tls, b"skip")) == b"v-skip"


def ctl_env() -> dict[str, str]:
    return {"ETCDCTL_API": "3", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def test_etcdctl_against_coord_with_tls(mtls_port: int, certs: Certs) -> None:
    base = ["etcdctl", f"--endpoints=https://127.0.0.1:{mtls_port}",
            f"--cacert={certs.ca.cert}", f"--cert={certs.client.cert}",
            f"--key={certs.client.key}", "--command-timeout=5s"]
    put = subprocess.run([*base, "put", "ctl-key", "ctl-value"], capture_output=True,
                         text=True, timeout=30, env=ctl_env(), check=False)
    assert put.returncode == 0 and put.stdout.strip() == "OK", put.stderr
    get = subprocess.run([*base, "get", "ctl-key"], capture_output=True, text=True,
                         timeout=30, env=ctl_env(), check=False)
    assert get.stdout.split() == ["ctl-key", "ctl-value"], get.stderr
    bare = [a for a in base if not a.startswith(("--cert=", "--key="))]
    refused = subprocess.run([*bare, "--dial-timeout=2s", "get", "ctl-key"],
                             capture_output=True, text=True, timeout=30, env=ctl_env(),
                             check=False)
    assert refused.returncode != 0 and "ctl-value" not in refused.stdout


def raftcron(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize("server", ["coord", "etcd"])
def test_the_cli_takes_etcdctls_flags(server: str, mtls_port: int, etcd_port: int,
                                      certs: Certs) -> None:
    port = mtls_port if server == "coord" else etcd_port
    ep = f"https://127.0.0.1:{port}"
    flags = ["--cacert", str(certs.ca.cert), "--cert", str(certs.client.cert),
             "--key", str(certs.client.key)]
    ok = raftcron(*flags, "jobs", "list", "--endpoints", ep, "-o", "json")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().startswith("[")
    refused = raftcron("--cacert", str(certs.ca.cert), "jobs", "list", "--endpoints", ep)
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.startswith("Error: cannot reach the store"), refused.stderr
    half = raftcron("--cert", str(certs.client.cert), "jobs", "list", "--endpoints", ep)
    assert half.returncode == 2 and "--cert and --key go together" in half.stderr
