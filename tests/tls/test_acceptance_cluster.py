"""Issue #16's acceptance: "a 3-member cluster forms and survives kill -9 over peer mTLS",
as a user runs it: certificates from ``raftcron certs``, three ``raftcron agent`` processes
started at once with the README's flags (mutual TLS on both ports, each member's own
certificate, so peers are checked by name), a job every second. The leader's agent is
killed with ``kill -9``; the two others elect a new leader over peer mTLS, keep the data
written before and keep running the job."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coord.client import Client, ClientTLS
from tests.helpers.procs import REPO, Proc, ProcessGroup, free_port, port_open, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
NAMES = ("n1", "n2", "n3")


def raftcron(cwd: Path, *args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "scheduler.cli", *args], cwd=cwd,
                       capture_output=True, text=True, timeout=60, check=False,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, (args, r.stderr)


def status(port: int, tls: ClientTLS) -> tuple[int, int]:
    """(this member's id, the leader it knows); (0, 0) when it does not answer."""
    async def ask() -> tuple[int, int]:
        async with Client([f"https://127.0.0.1:{port}"], timeout=2, tls=tls) as c:
            s = await c.status()
            return s.header.member_id, s.leader
    try:
        return asyncio.run(ask())
    except Exception:  # noqa: BLE001 - not up yet, or no leader: poll again
        return 0, 0


def runs(out: Path) -> int:
    return len(out.read_text().split()) if out.exists() else 0


def test_three_agents_over_peer_mtls_survive_a_kill9_of_the_leader(
        procs: ProcessGroup) -> None:
    work = procs.workdir
    raftcron(work, "certs", "init")
    for n in NAMES:
        raftcron(work, "certs", "member", n, "--host", "127.0.0.1")
    raftcron(work, "certs", "client", "admin")
    c = work / "certs"
    tls = ClientTLS(c / "ca.pem", c / "client-admin.pem", c / "client-admin-key.pem")
    out = work / "ran.txt"
    (work / "jobs.yaml").write_text(
        "jobs:\n  - name: mtls-heartbeat\n    schedule: '@every 1s'\n"
        f"    command: 'echo $RAFTCRON_OCCURRENCE >> {out}'\n")
    ports = {n: (free_port(), free_port()) for n in NAMES}
    initial = ",".join(f"{n}=127.0.0.1:{ports[n][1]}" for n in NAMES)
    agents: dict[str, Proc] = {}
    for n in NAMES:  # all three at once, as on three hosts
        agents[n] = procs.spawn(n, [
            sys.executable, "-m", "scheduler.cli", "agent", "--name", n,
            "--data-dir", str(work / f"{n}-data"),
            "--listen-client", f"127.0.0.1:{ports[n][0]}",
            "--listen-peer", f"127.0.0.1:{ports[n][1]}", "--initial-cluster", initial,
            "--cert-file", str(c / f"member-{n}.pem"),
            "--key-file", str(c / f"member-{n}-key.pem"),
            "--trusted-ca-file", str(c / "ca.pem"), "--client-cert-auth",
            "--peer-cert-file", str(c / f"member-{n}.pem"),
            "--peer-key-file", str(c / f"member-{n}-key.pem"),
            "--peer-trusted-ca-file", str(c / "ca.pem"), "--peer-client-cert-auth",
            "--jobs", str(work / "jobs.yaml"), "--log-dir", str(work / f"{n}-logs")],
            ports[n][0], env={"PYTHONPATH": str(REPO)})
    for n in NAMES:
        wait_until(lambda n=n: port_open(ports[n][0]) or not agents[n].alive(), 60, n)
        assert agents[n].alive(), agents[n].log()
    wait_until(lambda: len({status(ports[n][0], tls)[1] for n in NAMES} - {0}) == 1
               and all(status(ports[n][0], tls)[1] for n in NAMES), 60,
               "one leader known to all three members")
    wait_until(lambda: runs(out) >= 2, 60, "the job to run")

    async def put(port: int) -> None:
        async with Client([f"https://127.0.0.1:{port}"], timeout=5, tls=tls) as cl:
            await cl.put(b"before-kill", b"kept")
    asyncio.run(put(ports["n1"][0]))

    ids = {status(ports[n][0], tls)[0]: n for n in NAMES}
    lead = status(ports["n1"][0], tls)[1]
    victim = ids[lead]
    agents[victim].kill9()
    rest = [n for n in NAMES if n != victim]
    wait_until(lambda: all(status(ports[n][0], tls)[1] not in (0, lead) for n in rest), 60,
               "a new leader among the two left, over peer mTLS")
    seen = runs(out)
    wait_until(lambda: runs(out) >= seen + 3, 60, "the job to run after the kill -9")

    async def get(port: int) -> bytes:
        async with Client([f"https://127.0.0.1:{port}"], timeout=5, tls=tls) as cl:
            return (await cl.get(b"before-kill")).kvs[0].value
    for n in rest:
        assert asyncio.run(get(ports[n][0])) == b"kept"
        assert agents[n].alive(), agents[n].log()
