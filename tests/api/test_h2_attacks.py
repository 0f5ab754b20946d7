"""One hostile HTTP/2 client cannot take down a member (#15 item 3, docs/security.md).

Each attack runs from raw sockets against a real ``raftcron coord serve`` process, bounded
in time and frame count, while a normal client gets a key every half second: no get fails,
the member's RSS stays under :data:`RSS_BOUND_MB`, and the server answers the attack with
its limit (GOAWAY ENHANCE_YOUR_CALM, a refused or dropped stream, flow control). Every
single-member attack runs twice: in plaintext and over TLS (``--cert-file``/``--key-file``
with a test CA; the attacker and the watching client speak TLS with ALPN h2, #16).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coord.pb import rpc_pb2, rpc_pb2_grpc
from coord.rpc.h2.limits import MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE
from coord.rpc.h2.server import (
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    HEADERS,
    REFUSED_STREAM,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_HEADER_LIST_SIZE,
    frame,
    grpc_message,
)
from tests.api.h2_attack import (
    PUT,
    RANGE,
    Attacker,
    Target,
    Watch,
    connect,
    indexed_header_bomb,
    ping_batch,
    rapid_reset_batch,
    request_headers,
    rss_kib,
    run_for,
    settings_batch,
)
from tests.helpers.procs import (
    REPO,
    Proc,
    coord_argv,
    free_port,
    port_open,
    process_group,
    wait_until,
)
from tests.process.cluster import CoordCluster
from tests.tls.certs import make_ca

RSS_BOUND_MB = 250
"""The member's RSS during any one attack (it idles at about 60 MB; before the limits, the
attacks here took it to 0.5-1 GB and more)."""

ATTACK_SECONDS = 4.0


@pytest.fixture(params=["plain", "tls"])
def member(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """A single member, serving its client port in plaintext or over TLS."""
    with process_group(tmp_path) as group:
        argv = coord_argv("n1", tmp_path / "n1-data", free_port(), free_port())
        cacert = None
        if request.param == "tls":
            ca = make_ca(tmp_path / "certs")
            pair = ca.issue(tmp_path / "certs", "server")
            argv += ["--cert-file", str(pair.cert), "--key-file", str(pair.key)]
            cacert = ca.cert
        cport = int(argv[argv.index("--listen-client") + 1].rsplit(":", 1)[1])
        proc = group.spawn("n1", argv, cport, env={"PYTHONPATH": str(REPO)})
        wait_until(lambda: port_open(cport) or not proc.alive(), 30, f"coord on :{cport}")
        target = Target(proc, cacert)
        with target.channel() as ch:  # ready to answer
            rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"probe"), timeout=30,
                                          wait_for_ready=True)
        yield target


def _check(watch: Watch, proc: Proc | Target) -> None:
    assert proc.alive(), proc.log()[-3000:]
    assert watch.gets >= 2, f"only {watch.gets} gets answered"
    assert not watch.failures, watch.failures[:5]
    assert watch.max_rss_kib < RSS_BOUND_MB << 10, (
        f"RSS reached {watch.max_rss_kib >> 10} MB (bound {RSS_BOUND_MB} MB)")


def test_rapid_reset_on_four_connections(member: Target) -> None:
    attackers = [member.attacker() for _ in range(4)]
    counts = [0] * 4

    def attack(i: int) -> None:
        a = attackers[i]
        a.connect()
        next_id = [1]

        def step() -> bool:
            if counts[i] >= 2_000_000:
                return False
            if not a.send(rapid_reset_batch(next_id[0], 100)):
                next_id[0] = 1  # the server closed the connection; a new one
            else:
                next_id[0] += 200
                counts[i] += 100
            return True
        run_for(ATTACK_SECONDS, step)
        a.close()

    with member.watch() as watch:
        threads = [threading.Thread(target=attack, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=ATTACK_SECONDS + 30)
    print(f"rapid reset: {sum(counts)} streams, max RSS {watch.max_rss_kib >> 10} MB, "
          f"gets {watch.gets}, goaways {sum(len(a.goaways) for a in attackers)}")
    _check(watch, member)
    assert any(ENHANCE_YOUR_CALM in a.goaways for a in attackers)


def _flood(member: Target, batch: bytes, what: str) -> Attacker:
    a = member.attacker()
    a.connect()
    sent = [0]

    def step() -> bool:
        a.send(batch)
        sent[0] += 1
        return sent[0] < 200_000
    with member.watch() as watch:
        run_for(ATTACK_SECONDS, step)
        a.close()
    print(f"{what}: {sent[0]} batches, max RSS {watch.max_rss_kib >> 10} MB, "
          f"gets {watch.gets}, goaways {a.goaways[:3]} ({len(a.goaways)})")
    _check(watch, member)
    return a


def test_ping_flood(member: Target) -> None:
    a = _flood(member, ping_batch(500), "ping flood")
    assert ENHANCE_YOUR_CALM in a.goaways


def test_settings_flood(member: Target) -> None:
    a = _flood(member, settings_batch(500), "settings flood")
    assert ENHANCE_YOUR_CALM in a.goaways


def test_hpack_indexed_reference_bomb(member: Target) -> None:
    a = member.attacker()
    a.connect()
    blocks = [0]
    next_id = [1]

    def step() -> bool:
        if not a.send(indexed_header_bomb(next_id[0])):
            next_id[0] = 1
        else:
            next_id[0] += 2
        blocks[0] += 1
        return blocks[0] < 20_000
    with member.watch() as watch:
        run_for(ATTACK_SECONDS, step)
        a.drain(wait=1.0)
        a.close()
    print(f"hpack bomb: {blocks[0]} blocks, max RSS {watch.max_rss_kib >> 10} MB, "
          f"gets {watch.gets}, goaways {len(a.goaways)}")
    _check(watch, member)
    assert ENHANCE_YOUR_CALM in a.goaways


def test_unfinished_messages_on_400_streams(member: Target) -> None:
    a = member.attacker()
    a.connect()
    block = request_headers(PUT)
    declared = (2 << 20) - 64
    piece = b"x" * 16_000
    per_stream = declared - 1_000  # never finished
    state = {"stream": 0, "sent": 0, "data": 0}

    def step() -> bool:
        if state["stream"] >= 400:
            return False
        sid = 1 + 2 * state["stream"]
        if state["sent"] == 0:
            if not a.send(frame(HEADERS, END_HEADERS, sid, block)
                          + frame(DATA, 0, sid, b"\x00" + struct.pack(">I", declared))):
                return False
            state["data"] += 5
        budget = a.conn_window - state["data"]
        if budget < 16_000:
            a.drain(wait=0.2)  # wait for connection credit
            return True
        left = per_stream - state["sent"]
        chunk = piece if left >= 16_000 else piece[:left]
        n = min(64, budget // 16_000, max(1, left // 16_000))
        out = frame(DATA, 0, sid, chunk) * n
        if not a.send(out):
            return False
        state["data"] += len(chunk) * n
        state["sent"] += len(chunk) * n
        if state["sent"] >= per_stream:
            state["stream"] += 1
            state["sent"] = 0
        return True
    with member.watch() as watch:
        run_for(2 * ATTACK_SECONDS, step)
        a.close()
    print(f"unfinished messages: {state['stream']} streams, {state['data'] >> 20} MiB sent, "
          f"max RSS {watch.max_rss_kib >> 10} MB, gets {watch.gets}, resets {a.resets[:5]} "
          f"({len(a.resets)}) goaways {a.goaways}")
    _check(watch, member)


def test_window_zero_client_asking_for_large_responses(member: Target) -> None:
    with member.channel() as ch:
        rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"big", value=b"v" * (1 << 20)),
                                    timeout=10)
    a = member.attacker(settings=struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, 0))
    a.connect()
    block = request_headers(RANGE)
    body = grpc_message(rpc_pb2.RangeRequest(key=b"big").SerializeToString())
    state = {"next": 1, "calls": 0}

    def step() -> bool:
        out = []
        for _ in range(50):
            sid = state["next"]
            state["next"] += 2
            out.append(frame(HEADERS, END_HEADERS, sid, block)
                       + frame(DATA, END_STREAM, sid, body))
        if not a.send(b"".join(out)):
            state["next"] = 1
        state["calls"] += 50
        return state["calls"] < 600
    with member.watch() as watch:
        run_for(ATTACK_SECONDS, step)
        a.drain(wait=1.0)
        a.close()
    print(f"window 0: {state['calls']} calls, max RSS {watch.max_rss_kib >> 10} MB, "
          f"gets {watch.gets}")
    _check(watch, member)


def test_connection_without_preface_is_closed(member: Target) -> None:
    """Connections that never finish the handshake are closed after PREFACE_TIMEOUT: the
    HTTP/2 one (a preface and no SETTINGS), and over TLS the TLS one too (sockets that
    never send a ClientHello)."""
    socks = [socket.create_connection(("127.0.0.1", member.port), timeout=30)
             for _ in range(3)]
    socks[1].close()
    socks[1] = connect(member.port, member.tls())
    socks[1].settimeout(30)
    socks[1].sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # preface, then no SETTINGS
    start = time.monotonic()
    for s in socks:
        data = b""
        while True:
            chunk = s.recv(65536)  # the server's SETTINGS, maybe a GOAWAY, then EOF
            if not chunk:
                break
            data += chunk
        s.close()
    assert time.monotonic() - start < 25


def test_ping_flood_on_the_leader_keeps_leadership(tmp_path: Path) -> None:
    with process_group(tmp_path) as group:
        cluster = CoordCluster(group, size=3, faults=False)
        cluster.start()
        leader = asyncio.run(cluster.wait_leader(timeout=30))
        before = asyncio.run(cluster.status(leader, timeout=5))
        assert before is not None
        proc = cluster.members[leader].proc
        assert proc is not None
        attackers = [Attacker(cluster.members[leader].cport) for _ in range(2)]
        for a in attackers:
            a.connect()

        def attack(a: Attacker) -> None:
            n = [0]

            def step() -> bool:
                a.send(ping_batch(500))
                n[0] += 1
                return n[0] < 200_000
            run_for(ATTACK_SECONDS, step)
            a.close()
        with Watch(cluster.members[leader].endpoint, proc.popen.pid) as watch:
            threads = [threading.Thread(target=attack, args=(a,)) for a in attackers]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=ATTACK_SECONDS + 30)
        _check(watch, proc)
        assert asyncio.run(cluster.wait_leader(timeout=10)) == leader, cluster.logs()
        after = asyncio.run(cluster.status(leader, timeout=5))
        assert after is not None and after.raftTerm == before.raftTerm, cluster.logs()
        print(f"leader ping flood: RSS {rss_kib(proc.popen.pid) >> 10} MB, gets {watch.gets}")


def test_streams_over_the_announced_limit_are_refused(member: Target) -> None:
    """SETTINGS_MAX_CONCURRENT_STREAMS is announced and held: calls opened beyond it get
    RST_STREAM REFUSED_STREAM (gRPC clients retry those), the ones within it are served."""
    a = member.attacker()
    a.connect()
    block = request_headers(RANGE)  # requests never finished: each call stays open
    a.send(b"".join(frame(HEADERS, END_HEADERS, 1 + 2 * i, block) for i in range(300)))
    with member.watch() as watch:
        deadline = time.monotonic() + 10
        while len(a.resets) < 50 and time.monotonic() < deadline:
            a.drain(wait=0.2)
    a.close()
    assert a.settings_seen.get(SETTINGS_MAX_CONCURRENT_STREAMS) == MAX_CONCURRENT_STREAMS
    assert a.settings_seen.get(SETTINGS_MAX_HEADER_LIST_SIZE) == MAX_HEADER_LIST_SIZE
    assert a.resets == [REFUSED_STREAM] * 50
    _check(watch, member)


def test_many_concurrent_large_puts_on_one_connection_all_succeed(member: Target) -> None:
    """Connection credit held for incomplete messages does not stall a normal client:
    24 concurrent puts of 1.4 MiB on one channel all succeed."""
    with member.channel() as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        value = b"v" * (1400 << 10)
        futures = [kv.Put.future(rpc_pb2.PutRequest(key=b"large/%d" % i, value=value),
                                 timeout=60) for i in range(24)]
        for f in futures:
            f.result()
