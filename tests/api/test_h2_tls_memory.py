"""A TLS connection the member has closed costs it no memory afterwards (#16,
docs/security.md "Floods over TLS").

Four attackers reopen, at once and about a thousand times, connections that the member
ends (a PING flood gets GOAWAY ENHANCE_YOUR_CALM), while a normal client gets a key every
half second. The member's RSS may not grow by more than 25 MB: an ended connection's TLS
state (its 256 KiB read buffer, the OpenSSL object and its memory BIOs) must be freed when
the connection is gone, not held for a second by the timer that cuts off peers which never
read their GOAWAY. The bound is on growth over a count of connections, not over a time: a
slow machine churns fewer connections a second and would otherwise pass blind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coord.pb import rpc_pb2, rpc_pb2_grpc
from coord.rpc.h2.server import ENHANCE_YOUR_CALM
from tests.api.h2_attack import Attacker, Target, ping_batch, rss_kib
from tests.helpers.procs import REPO, coord_argv, free_port, port_open, process_group, wait_until
from tests.tls.certs import make_ca

CONNECTIONS = 1000
"""Connections the attackers get the member to end (fewer if :data:`MAX_SECONDS` pass)."""

MIN_CONNECTIONS = 300
"""Connections that must have ended for the run to say anything (a machine too loaded to
manage this many in :data:`MAX_SECONDS` fails the test rather than passing it blind)."""

MAX_SECONDS = 30.0

GROWTH_BOUND_MB = 25
"""How much the member's RSS may grow over its RSS before the attack (it grows by
1-5 MB; before #16's fix, 65-350 MB, depending on the machine's speed)."""


@pytest.fixture
def tls_member(tmp_path: Path) -> Iterator[Target]:
    with process_group(tmp_path) as group:
        argv = coord_argv("n1", tmp_path / "n1-data", free_port(), free_port())
        ca = make_ca(tmp_path / "certs")
        pair = ca.issue(tmp_path / "certs", "server")
        argv += ["--cert-file", str(pair.cert), "--key-file", str(pair.key)]
        cport = int(argv[argv.index("--listen-client") + 1].rsplit(":", 1)[1])
        proc = group.spawn("n1", argv, cport, env={"PYTHONPATH": str(REPO)})
        wait_until(lambda: port_open(cport) or not proc.alive(), 30, f"coord on :{cport}")
        target = Target(proc, ca.cert)
        with target.channel() as ch:
            rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"probe"), timeout=30,
                                          wait_for_ready=True)
        yield target


def test_ended_tls_connections_free_their_memory(tls_member: Target) -> None:
    attackers = [tls_member.attacker() for _ in range(4)]
    deadline = time.monotonic() + MAX_SECONDS
    batch = ping_batch(500)

    def ended() -> int:
        return sum(a.closed_by_server for a in attackers)

    def attack(a: Attacker) -> None:
        a.connect()
        while ended() < CONNECTIONS and time.monotonic() < deadline:
            a.send(batch)
        a.close()

    with tls_member.channel() as ch:  # the watcher's connection is up before the baseline
        rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"probe"), timeout=10)
    before = rss_kib(tls_member.pid)
    with tls_member.watch() as watch:
        threads = [threading.Thread(target=attack, args=(a,)) for a in attackers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=MAX_SECONDS + 30)
    growth_mb = (watch.max_rss_kib - before) >> 10
    print(f"TLS churn: {ended()} connections ended by the member, RSS {before >> 10} MB "
          f"-> max {watch.max_rss_kib >> 10} MB (+{growth_mb}), gets {watch.gets}")
    assert tls_member.alive(), tls_member.log()[-3000:]
    assert ended() >= MIN_CONNECTIONS, f"only {ended()} connections in {MAX_SECONDS} s"
    assert all(ENHANCE_YOUR_CALM in a.goaways for a in attackers)
    assert watch.gets >= 2 and not watch.failures, (watch.gets, watch.failures[:5])
    assert growth_mb < GROWTH_BOUND_MB, (
        f"RSS grew by {growth_mb} MB over {ended()} ended connections")
