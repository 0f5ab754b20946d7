"""Issue 16 item 1: certificates reload without restarting the member.

A member serves TLS on both ports (``--client-cert-auth``, ``--peer-client-cert-auth``)
with files from one CA. The files are replaced by a certificate, key and CA from a new CA
(each file written to a temporary name and renamed over the old, as a careful operator
or cert-manager does); then the member is sent SIGHUP (with the file watch off), or just
left to notice (the watch: every 2 s). A client trusting only the new CA, with a
certificate from it, then connects on both ports; the old CA's clients no longer can; a
connection made before the reload goes on; the member is the same process, at the same
term, the whole time. A broken new pair (key and certificate that do not match) keeps
the old certificate, with one ``tls.reload_failed`` error.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coord.client import Client, ClientTLS
from tests.helpers.procs import REPO, Proc, coord_argv, free_port, process_group, wait_until
from tests.tls.certs import CA, Pair, make_ca
from tests.tls.test_server_tls import closed_on_us

pytestmark = pytest.mark.timeout(120)

OBSERVE = 6.0
"""Seconds the broken-pair test watches for a second error (three watch intervals)."""


@dataclass
class Member:
    proc: Proc
    cport: int
    pport: int
    live: Path
    """The files the member's flags name (replaced by the tests)."""
    old: tuple[CA, Pair]
    new: tuple[CA, Pair]


@pytest.fixture
def member(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Member]:
    watch = getattr(request, "param", "")
    d = tmp_path / "certs"
    d.mkdir()
    old_ca, new_ca = make_ca(d, "ca1"), make_ca(d, "ca2")
    old, new = old_ca.issue(d, "n1"), new_ca.issue(d, "n1")
    live = tmp_path / "live"
    live.mkdir()
    install(live, old_ca, old)
    cport, pport = free_port(), free_port()
    argv = [*coord_argv("n1", tmp_path / "n1-data", cport, pport),
            "--cert-file", str(live / "cert.pem"), "--key-file", str(live / "key.pem"),
            "--trusted-ca-file", str(live / "ca.pem"), "--client-cert-auth",
            "--peer-cert-file", str(live / "cert.pem"), "--peer-key-file",
            str(live / "key.pem"), "--peer-trusted-ca-file", str(live / "ca.pem"),
            "--peer-client-cert-auth"]
    env = {"PYTHONPATH": str(REPO)}
    if watch:
        env["RAFTCRON_TLS_WATCH_INTERVAL"] = watch
    with process_group(tmp_path) as group:
        proc = group.spawn("n1", argv, cport, env=env)
        m = Member(proc, cport, pport, live, (old_ca, old), (new_ca, new))
        wait_until(lambda: serves(m, cport, m.old) or not proc.alive(), 30, "n1 serves TLS")
        assert proc.alive(), proc.log()
        yield m


def install(live: Path, ca: CA, pair: Pair, key: Path | None = None) -> None:
    """Replace the live files, each by a rename (a reader never sees half a file)."""
    for src, name in ((ca.cert, "ca.pem"), (pair.cert, "cert.pem"),
                      (key or pair.key, "key.pem")):
        tmp = live / f".{name}.tmp"
        shutil.copyfile(src, tmp)
        os.replace(tmp, live / name)


def serves(m: Member, port: int, creds: tuple[CA, Pair]) -> bool:
    """Whether ``port`` completes a TLS handshake and speaks HTTP/2 with a client that
    trusts only ``creds``' CA and presents its certificate."""
    ca, pair = creds
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    ctx.set_alpn_protocols(["h2"])
    ctx.load_cert_chain(pair.cert, pair.key)
    try:
        with (socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
              ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls):
            return not closed_on_us(tls)
    except (ssl.SSLError, OSError):
        return False


def events(proc: Proc, name: str) -> list[dict[str, object]]:
    return [e for e in (json.loads(line) for line in proc.log().splitlines()
                        if line.startswith("{") and name in line) if e.get("event") == name]


async def held_connection(m: Member, check: asyncio.Event, done: asyncio.Event) -> int:
    """A client connected with the old CA before the rotation: one get, then (when
    ``check`` is set) another on the same client, and the term it reports."""
    ca, pair = m.old
    tls = ClientTLS(ca.cert, pair.cert, pair.key)
    async with Client([f"https://127.0.0.1:{m.cport}"], timeout=5, tls=tls) as c:
        await c.put("k", "before")
        term = (await c.status()).raft_term
        done.set()
        await check.wait()
        assert (await c.get("k")).kvs[0].value == b"before"
        assert (await c.status()).raft_term == term
        return term


def rotate_and_check(m: Member, reload: str) -> None:
    pid = m.proc.popen.pid

    async def scenario() -> None:
        check, ready = asyncio.Event(), asyncio.Event()
        held = asyncio.ensure_future(held_connection(m, check, ready))
        await asyncio.wait_for(ready.wait(), 20)
        install(m.live, *m.new)
        if reload == "SIGHUP":
            os.kill(pid, signal.SIGHUP)
        loop = asyncio.get_running_loop()
        for port in (m.cport, m.pport):
            end = loop.time() + 20
            while not await asyncio.to_thread(serves, m, port, m.new):
                assert loop.time() < end, f"port {port} never took the new certificate"
                assert m.proc.alive(), m.proc.log()
                await asyncio.sleep(0.1)
            assert not await asyncio.to_thread(serves, m, port, m.old)
        check.set()
        await asyncio.wait_for(held, 20)  # the connection made before goes on

    asyncio.run(scenario())
    assert m.proc.alive() and m.proc.popen.pid == pid
    reloaded = events(m.proc, "tls.reloaded")
    assert {(e["port"], e["trigger"]) for e in reloaded} >= {
        ("client", reload), ("peer", reload)}, reloaded
    assert not events(m.proc, "tls.reload_failed")


@pytest.mark.parametrize("member", ["0"], indirect=True)  # the file watch off
def test_sighup_reloads_both_ports(member: Member) -> None:
    rotate_and_check(member, "SIGHUP")


def test_a_file_change_reloads_both_ports(member: Member) -> None:
    rotate_and_check(member, "file change")


def test_a_broken_pair_keeps_the_old_certificate(member: Member) -> None:
    m = member
    pair = m.new[1]
    install(m.live, m.old[0], pair, key=m.old[1].key)  # new certificate, old key
    wait_until(lambda: len(events(m.proc, "tls.reload_failed")) > 0 or not m.proc.alive(),
               20, "the broken pair reported")
    asyncio.run(asyncio.sleep(OBSERVE))  # three watch intervals more: no second report
    failed = events(m.proc, "tls.reload_failed")
    assert len(failed) == 2, failed  # one line per port, each once
    assert {e["port"] for e in failed} == {"client", "peer"}
    assert "hint" in failed[0] and failed[0]["error"]
    assert m.proc.alive()
    assert serves(m, m.cport, m.old) and serves(m, m.pport, m.old)


def test_member_list_shows_https_urls(member: Member) -> None:
    ca, pair = member.old
    out = subprocess.run(
        ["etcdctl", f"--endpoints=https://127.0.0.1:{member.cport}", f"--cacert={ca.cert}",
         f"--cert={pair.cert}", f"--key={pair.key}", "--command-timeout=5s",
         "member", "list", "-w", "json"],
        capture_output=True, text=True, timeout=30, check=False,
        env={"ETCDCTL_API": "3", "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    assert out.returncode == 0, out.stderr
    (m,) = json.loads(out.stdout)["members"]
    assert m["peerURLs"] == [f"https://127.0.0.1:{member.pport}"]
    assert m["clientURLs"] == [f"https://127.0.0.1:{member.cport}"]


def served_cn(port: int, creds: tuple[CA, Pair]) -> str:
    """The common name of the certificate ``port`` presents."""
    ca, pair = creds
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    ctx.load_cert_chain(pair.cert, pair.key)
    with (socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
          ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls):
        cert = tls.getpeercert() or {}
        return next((str(v) for rdn in cert.get("subject", ()) for k, v in rdn
                     if k == "commonName"), "")


def test_a_peer_certificate_naming_another_member_is_not_taken(
        member: Member, tmp_path: Path) -> None:
    """Peers check that a member's certificate names it: a reload to one that names
    another member would cut this one off, so the peer port keeps its certificate (the
    client port, which has no such rule, takes it)."""
    ca, _ = m_old = member.old
    other = ca.issue(tmp_path / "certs", "n2")
    install(member.live, ca, other)
    wait_until(lambda: bool(events(member.proc, "tls.reload_failed"))
               or not member.proc.alive(), 20, "the wrong name reported")
    (failed,) = events(member.proc, "tls.reload_failed")
    assert failed["port"] == "peer" and "not this member's name 'n1'" in str(failed["error"])
    wait_until(lambda: served_cn(member.cport, m_old) == "n2", 20, "the client port reloads")
    assert served_cn(member.pport, m_old) == "n1"
    assert member.proc.alive()
