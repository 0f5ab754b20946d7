"""Issue 16 item 1, across a cluster: three agents over peer mutual TLS move to a new CA
by reloads alone, and then dial each other with the new certificates.

The documented rotation (docs/security.md, "Certificate reload"), one SIGHUP per member
and step (the file watch off, so that each step is the signal's doing): both CAs in
every ``--peer-trusted-ca-file``; each member's certificate from the new CA; the old CA
dropped. The links the members opened before go on. Then a follower is killed (-9) and
started again: it trusts only the new CA, so the other two can reach it only if their
dialers took their new certificates (and it them only if their listeners did). It
catches up and serves a linearizable read of a write made while it was down; the other
two are the same processes, and the leader and term never changed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from coord.client import Client
from tests.helpers.procs import REPO, Proc, free_port, port_open, process_group, wait_until
from tests.tls.certs import make_ca
from tests.tls.test_cert_reload import events

pytestmark = pytest.mark.timeout(240)

NAMES = ("n1", "n2", "n3")


def agent_argv(name: str, work: Path, cport: int, pport: int, initial: str) -> list[str]:
    live = work / f"{name}-tls"
    return [
        sys.executable, "-m", "scheduler.cli", "agent", "--name", name,
        "--data-dir", str(work / f"{name}-data"),
        "--listen-client", f"127.0.0.1:{cport}", "--listen-peer", f"127.0.0.1:{pport}",
        "--initial-cluster", initial,
        "--peer-cert-file", str(live / "cert.pem"), "--peer-key-file", str(live / "key.pem"),
        "--peer-trusted-ca-file", str(live / "ca.pem"), "--peer-client-cert-auth"]


def put_file(dst: Path, data: bytes) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dst)


async def status(cport: int) -> tuple[int, int, int]:
    """(member id, leader, term) as member ``cport`` answers."""
    async with Client([f"127.0.0.1:{cport}"], timeout=3) as c:
        st = await c.status()
        return st.header.member_id, st.leader, st.raft_term


def answers(cport: int) -> tuple[int, int, int] | None:
    try:
        return asyncio.run(status(cport))
    except Exception:  # noqa: BLE001 - not up, or no leader yet: poll again
        return None


def test_a_cluster_moves_to_a_new_ca_by_reloads(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    old_ca, new_ca = make_ca(certs, "ca1"), make_ca(certs, "ca2")
    bundle = old_ca.cert.read_bytes() + new_ca.cert.read_bytes()
    cports = {n: free_port() for n in NAMES}
    pports = {n: free_port() for n in NAMES}
    initial = ",".join(f"{n}=127.0.0.1:{pports[n]}" for n in NAMES)
    work = tmp_path / "work"
    work.mkdir()
    for n in NAMES:
        live = work / f"{n}-tls"
        live.mkdir()
        pair = old_ca.issue(certs, n)
        for src, name in ((old_ca.cert, "ca.pem"), (pair.cert, "cert.pem"),
                          (pair.key, "key.pem")):
            shutil.copyfile(src, live / name)
    env = {"PYTHONPATH": str(REPO), "RAFTCRON_TLS_WATCH_INTERVAL": "0"}
    with process_group(work) as group:
        procs: dict[str, Proc] = {}

        def spawn(n: str) -> None:
            procs[n] = group.spawn(n, agent_argv(n, work, cports[n], pports[n], initial),
                                   cports[n], env=env)

        for n in NAMES:
            spawn(n)
        for n in NAMES:
            wait_until(lambda n=n: port_open(cports[n]) or not procs[n].alive(), 60, n)
        wait_until(lambda: all((answers(cports[n]) or (0, 0, 0))[1] for n in NAMES), 60,
                   "a leader over peer mTLS (old CA)")
        first = answers(cports["n1"])
        assert first is not None
        _, leader_id, term = first
        pids = {n: procs[n].popen.pid for n in NAMES}

        def step(k: int, write: Callable[[str, Path], None]) -> None:
            for n in NAMES:
                write(n, work / f"{n}-tls")
                os.kill(pids[n], signal.SIGHUP)
            for n in NAMES:
                wait_until(lambda n=n: len([e for e in events(procs[n], "tls.reloaded")
                                            if e["port"] == "peer"]) >= k
                           or not procs[n].alive(), 30, f"{n} reload {k}")
                assert procs[n].alive(), procs[n].log()[-3000:]

        step(1, lambda n, live: put_file(live / "ca.pem", bundle))

        def new_cert(n: str, live: Path) -> None:
            pair = new_ca.issue(certs, n)
            put_file(live / "key.pem", pair.key.read_bytes())
            put_file(live / "cert.pem", pair.cert.read_bytes())

        step(2, new_cert)
        step(3, lambda n, live: put_file(live / "ca.pem", new_ca.cert.read_bytes()))
        for n in NAMES:
            assert not events(procs[n], "tls.reload_failed"), n

        ids = {n: (answers(cports[n]) or (0, 0, 0))[0] for n in NAMES}
        victim = next(n for n in NAMES if ids[n] != leader_id)
        rest = [n for n in NAMES if n != victim]
        procs[victim].kill9()

        async def write_while_down() -> None:
            async with Client([f"127.0.0.1:{cports[n]}" for n in rest], timeout=5) as c:
                await c.put("/rotated", "after")

        asyncio.run(asyncio.wait_for(write_while_down(), 30))
        spawn(victim)  # its files: the new CA only

        async def read_on_victim() -> bytes:
            async with Client([f"127.0.0.1:{cports[victim]}"], timeout=3) as c:
                got = await c.get("/rotated")
                return got.kvs[0].value if got.kvs else b""

        def caught_up() -> bool:
            try:
                return asyncio.run(read_on_victim()) == b"after"
            except Exception:  # noqa: BLE001 - still starting or catching up
                return False

        wait_until(lambda: caught_up() or not procs[victim].alive(), 60,
                   f"{victim} back over the new certificates")
        assert procs[victim].alive(), procs[victim].log()[-3000:]
        for n in rest:
            assert procs[n].alive() and procs[n].popen.pid == pids[n]
            now = answers(cports[n])
            assert now is not None and now[1:] == (leader_id, term), (n, now, leader_id, term)
