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
from pathlib import Path

import pytest

from coord.client import Client, ClientError, ClientTLS
from tests.helpers.procs import REPO, free_port, process_group, wait_until
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


def test_a_worker_runs_jobs_against_a_real_etcd_with_mutual_tls(
        tmp_path: Path, certs: Certs, etcd_port: int) -> None:
    """`raftcron apply` then `raftcron worker`, both with etcdctl's flags, against etcd
    with --client-cert-auth: the job's command runs."""
    out = tmp_path / "ran.txt"
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("jobs:\n  - name: tls-every-second\n    schedule: '* * * * * *'\n"
                    f"    command: 'echo $RAFTCRON_JOB >> {out}'\n")
    ep = f"https://127.0.0.1:{etcd_port}"
    flags = ["--cacert", str(certs.ca.cert), "--cert", str(certs.client.cert),
             "--key", str(certs.client.key)]
    applied = raftcron(*flags, "apply", "-f", str(jobs), "--endpoints", ep)
    assert applied.returncode == 0, applied.stderr
    (tmp_path / "procs").mkdir()
    with process_group(tmp_path / "procs") as group:
        worker = group.spawn("w1", [sys.executable, "-m", "scheduler.cli", *flags, "worker",
                                    "--endpoints", ep, "--name", "tls-w1",
                                    "--log-dir", str(tmp_path / "logs")],
                             etcd_port, env={"PYTHONPATH": str(REPO)})
        wait_until(lambda: (out.exists() and "tls-every-second" in out.read_text())
                   or not worker.alive(), 30, "the job to run over TLS")
        assert worker.alive(), worker.log()
    removed = raftcron(*flags, "jobs", "delete", "tls-every-second", "--endpoints", ep)
    assert removed.returncode == 0, removed.stderr


def test_insecure_skip_tls_verify_against_nothing_is_a_client_error() -> None:
    tls = ClientTLS(insecure_skip_verify=True)
    with pytest.raises(ClientError, match="cannot fetch its certificate"):
        asyncio.run(round_trip(f"127.0.0.1:{free_port()}", tls, b"x"))
