"""Issue 16 item 3: peers are who they say.

A 3-member cluster over peer mutual TLS whose members' certificates name them (CN = the
member's ``--name``, no ``--peer-cert-allowed-cn``). A forger holding a real, CA-signed
certificate — member A's own, or a client's — speaks on a peer port as:

* member B, with A's certificate (a Send batch, a snapshot transfer),
* a sender that is not a member, or a batch for another cluster id,
* anyone, on the peer-side lease call, with a certificate that is no member's;

each is refused (FAILED_PRECONDITION) and counted (``transport.peer_rejected`` with its
kind and running total), and nothing changes: no forged key, same leader and term, every
member keeps serving writes. A member's own certificate speaking for itself still works.
One plaintext test: the cluster id and membership checks without TLS.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coord.client import Client
from coord.client.types import Status
from coord.pb import internal_pb2, raft_pb2, rpc_pb2
from coord.raft import (
    ConfState,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from coord.server.raft_node import TAG_REQUEST
from coord.server.transport import H2PeerStub
from coord.server.transport_snapshot import send_snapshot_h2, snapshot_chunks
from tests.helpers.procs import (
    REPO,
    Proc,
    coord_argv,
    free_port,
    port_open,
    process_group,
    wait_until,
)
from tests.tls.certs import Pair, make_ca

pytestmark = pytest.mark.timeout(150)

NAMES = ("n1", "n2", "n3")
OBSERVE = 3.0
"""Seconds the 'nothing changed' check keeps writing to the cluster after the forgeries."""
BAD = 0xBAD


@dataclass
class Cluster:
    procs: dict[str, Proc]
    cports: dict[str, int]
    pports: dict[str, int]
    pairs: dict[str, Pair]
    ca: Path


async def _status(cport: int) -> Status:
    async with Client([f"127.0.0.1:{cport}"], timeout=2) as c:
        return await c.status()


def status(cport: int) -> Status | None:
    try:
        return asyncio.run(_status(cport))
    except Exception:  # noqa: BLE001 - not up yet, or no leader: poll again
        return None


def has_leader(cport: int) -> bool:
    st = status(cport)
    return st is not None and st.leader != 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    d = tmp_path_factory.mktemp("identity-certs")
    ca = make_ca(d)
    pairs = {n: ca.issue(d, n) for n in NAMES}
    pairs["client"] = ca.issue(d, "client")
    cports = {n: free_port() for n in NAMES}
    pports = {n: free_port() for n in NAMES}
    initial = ",".join(f"{n}=127.0.0.1:{pports[n]}" for n in NAMES)
    with process_group(tmp_path_factory.mktemp("peer-identity")) as group:
        procs = {}
        for n in NAMES:
            argv = [*coord_argv(n, group.workdir / f"{n}-data", cports[n], pports[n], initial),
                    "--peer-cert-file", str(pairs[n].cert), "--peer-key-file",
                    str(pairs[n].key), "--peer-trusted-ca-file", str(ca.cert),
                    "--peer-client-cert-auth"]
            procs[n] = group.spawn(n, argv, cports[n], env={"PYTHONPATH": str(REPO)})
        for n in NAMES:
            wait_until(lambda n=n: port_open(cports[n]) or not procs[n].alive(), 30, n)
            assert procs[n].alive(), procs[n].log()
        wait_until(lambda: all(has_leader(cports[n]) for n in NAMES), 30,
                   "a leader elected over peer mTLS with per-member certificates")
        yield Cluster(procs, cports, pports, pairs, ca.cert)


def dialer(c: Cluster, who: str) -> ssl.SSLContext:
    """A peer dialer's context holding the certificate of ``who`` (a member or client)."""
    ctx = ssl.create_default_context(cafile=str(c.ca))
    ctx.set_alpn_protocols(["h2"])
    ctx.load_cert_chain(c.pairs[who].cert, c.pairs[who].key)
    return ctx


def batch(cluster_id: int, frm: int, *msgs: raft_pb2.RaftMessage) -> raft_pb2.MessageBatch:
    b = raft_pb2.MessageBatch(cluster_id=cluster_id, messages=list(msgs))
    setattr(b, "from", frm)
    return b


def msg(mtype: MessageType, frm: int, to: int, term: int, **kw: object) -> raft_pb2.RaftMessage:
    m = raft_pb2.RaftMessage(type=int(mtype), to=to, term=term, **kw)  # type: ignore[arg-type]
    setattr(m, "from", frm)
    return m


def put_entry(key: bytes) -> raft_pb2.RaftEntry:
    req = internal_pb2.InternalRequest(id=434343, put=rpc_pb2.PutRequest(key=key, value=b"x"))
    return raft_pb2.RaftEntry(type=int(EntryType.NORMAL),
                              data=TAG_REQUEST + req.SerializeToString())


async def refused(call: asyncio.Future[object] | object) -> str:
    """The refusal's text ('' if the call was accepted)."""
    try:
        await call  # type: ignore[misc]
    except ConnectionError as err:  # the peer's status (h2 client: StreamCallError)
        return str(err)
    return ""


def test_forged_peer_calls_are_refused(cluster: Cluster) -> None:
    asyncio.run(asyncio.wait_for(_forge(cluster), 90))


async def _forge(c: Cluster) -> None:
    st = await _status(c.cports["n1"])
    cid, term, lid = st.header.cluster_id, st.raft_term, st.leader
    ids: dict[str, int] = {}
    for n in NAMES:
        ids[n] = (await _status(c.cports[n])).header.member_id
    leader = next(n for n in NAMES if ids[n] == lid)
    a, t = [n for n in NAMES if n != leader]  # A forges as the leader B, to member T
    b = leader
    to_t = f"127.0.0.1:{c.pports[t]}"
    to_b = f"127.0.0.1:{c.pports[b]}"
    as_a = H2PeerStub(to_t, dialer(c, a))

    # 1. A's valid certificate claiming to be B (the leader): a heartbeat with a commit.
    hb = msg(MessageType.HEARTBEAT, ids[b], ids[t], term, commit=1 << 20)
    why = await refused(as_a.send_batch(batch(cid, ids[b], hb), timeout=5))
    assert "identity mismatch" in why or "must have CN='" in why, why
    # ... and a proposal sent to the leader as T (A's certificate again).
    prop = msg(MessageType.PROP, ids[t], ids[b], 0, entries=[put_entry(b"/forged/as-t")])
    why = await refused(H2PeerStub(to_b, dialer(c, a)).send_batch(batch(cid, ids[t], prop),
                                                                   timeout=5))
    assert why, "a proposal claiming another member was accepted"
    # 2. A wrong `from`: a sender that is no member, with A's certificate.
    why = await refused(as_a.send_batch(batch(cid, BAD, msg(
        MessageType.HEARTBEAT, BAD, ids[t], term)), timeout=5))
    assert "not a member" in why, why
    # 3. Another cluster's batch, from A as A.
    why = await refused(as_a.send_batch(batch(cid ^ 1, ids[a], msg(
        MessageType.HEARTBEAT, ids[a], ids[t], term)), timeout=5))
    assert "cluster ID mismatch" in why, why
    # 4. A snapshot transfer to T claiming to be B, with A's certificate.
    snap = Message(MessageType.SNAP, ids[t], ids[b], term, snapshot=Snapshot(
        SnapshotMetadata(1 << 20, term, ConfState(tuple(ids.values()), ())), b"forged" * 10))
    why = await refused(send_snapshot_h2(to_t, snapshot_chunks(snap, cid, ids[b], 1 << 10),
                                         60, dialer(c, a)))
    assert "identity mismatch" in why or "must have CN='" in why, why
    # 5. The peer-side lease call with a CA-signed certificate that is no member's.
    client = H2PeerStub(to_b, dialer(c, "client"))
    why = await refused(client.LeaseRenew(raft_pb2.LeaseRenewRequest(id=1), timeout=5))
    assert "not a member's" in why, why
    # A member's own certificate, speaking for itself, is served.
    ok = await H2PeerStub(to_b, dialer(c, a)).LeaseRenew(raft_pb2.LeaseRenewRequest(id=1),
                                                         timeout=5)
    assert not ok.not_leader

    # Nothing changed, and every member serves for the observation interval.
    loop = asyncio.get_running_loop()
    async with Client([f"127.0.0.1:{c.cports[n]}" for n in NAMES], timeout=5) as cli:
        end = loop.time() + OBSERVE
        puts = 0
        while loop.time() < end:
            await cli.put(f"/real/{puts}", "v")
            puts += 1
    for name in NAMES:
        async with Client([f"127.0.0.1:{c.cports[name]}"], timeout=5) as one:
            assert (await one.get("/forged/", prefix=True)).count == 0, name
            assert (await one.get("/real/", prefix=True)).count == puts, name
    after = await _status(c.cports[t])
    assert (after.raft_term, after.leader) == (term, lid)
    assert all(p.alive() for p in c.procs.values())
    # Counted: T's log has each refusal with its kind and running total.
    events = [json.loads(line) for line in c.procs[t].log().splitlines()
              if line.startswith("{") and "transport.peer_rejected" in line]
    kinds = {e["kind"] for e in events}
    assert {"identity mismatch", "not a member", "cluster ID mismatch"} <= kinds, kinds
    assert all(e["total"] >= 1 for e in events)


def test_plaintext_checks_cluster_id_and_membership(tmp_path: Path) -> None:
    """Without peer TLS there is no certificate to check: the cluster id and the sender's
    membership are, and each refusal is counted."""
    cport, pport = free_port(), free_port()
    with process_group(tmp_path) as group:
        proc = group.spawn("p1", coord_argv("p1", tmp_path / "p1-data", cport, pport), cport,
                           env={"PYTHONPATH": str(REPO)})
        wait_until(lambda: has_leader(cport) or not proc.alive(), 30, "p1 leads")

        async def forge() -> None:
            st = await _status(cport)
            cid, me, term = st.header.cluster_id, st.header.member_id, st.raft_term
            stub = H2PeerStub(f"127.0.0.1:{pport}")
            hb = msg(MessageType.HEARTBEAT, BAD, me, term + 1)
            assert "not a member" in await refused(stub.send_batch(batch(cid, BAD, hb), 5))
            assert "cluster ID mismatch" in await refused(
                stub.send_batch(batch(cid ^ 1, BAD, hb), 5))
            after = await _status(cport)
            assert (after.raft_term, after.leader) == (term, me)

        asyncio.run(asyncio.wait_for(forge(), 30))
        events = [json.loads(line) for line in proc.log().splitlines()
                  if line.startswith("{") and "transport.peer_rejected" in line]
        assert {e["kind"] for e in events} == {"not a member", "cluster ID mismatch"}
        assert proc.alive()


def test_a_member_added_over_peer_tls_joins(tmp_path: Path) -> None:
    """``member add`` gives a member no name: until it publishes its own, its certificate
    must name the host of its peer URL (a SAN); then its name (the CN). It joins, catches
    up, publishes, and ``member list`` shows both members with https:// peer URLs."""
    d = tmp_path / "certs"
    d.mkdir()
    ca = make_ca(d)
    pairs = {n: ca.issue(d, n) for n in ("n1", "n2")}
    cports = {n: free_port() for n in pairs}
    pports = {n: free_port() for n in pairs}

    def argv(n: str, initial: str, *extra: str) -> list[str]:
        return [*coord_argv(n, tmp_path / f"{n}-data", cports[n], pports[n], initial),
                "--peer-cert-file", str(pairs[n].cert), "--peer-key-file", str(pairs[n].key),
                "--peer-trusted-ca-file", str(ca.cert), "--peer-client-cert-auth", *extra]

    env = {"PYTHONPATH": str(REPO)}
    with process_group(tmp_path) as group:
        n1 = group.spawn("n1", argv("n1", f"n1=127.0.0.1:{pports['n1']}"), cports["n1"], env)
        wait_until(lambda: has_leader(cports["n1"]) or not n1.alive(), 30, "n1 leads")

        add = subprocess.run(
            ["etcdctl", f"--endpoints=127.0.0.1:{cports['n1']}", "--command-timeout=5s",
             "member", "add", "n2", f"--peer-urls=https://127.0.0.1:{pports['n2']}"],
            capture_output=True, text=True, timeout=30, check=False,
            env={"ETCDCTL_API": "3", "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        assert add.returncode == 0, add.stderr
        both = ",".join(f"{n}=127.0.0.1:{pports[n]}" for n in pairs)
        n2 = group.spawn("n2", argv("n2", both, "--initial-cluster-state", "existing"),
                         cports["n2"], env)

        async def joined() -> list[tuple[str, list[str]]]:
            async with Client([f"127.0.0.1:{cports['n1']}"], timeout=3) as c:
                await c.put("/before-join", "x")  # needs both voters now
            async with Client([f"127.0.0.1:{cports['n2']}"], timeout=3) as c:
                assert (await c.get("/before-join")).count == 1
                return sorted((m.name, m.peer_urls) for m in await c.members())

        want = [(n, [f"https://127.0.0.1:{pports[n]}"]) for n in ("n1", "n2")]

        def published() -> bool:
            try:
                return asyncio.run(joined()) == want
            except Exception:  # noqa: BLE001 - joining, catching up or publishing
                return False

        wait_until(lambda: published() or not n2.alive(), 60, "n2 joined and named")
        assert n1.alive() and n2.alive()
        rejected = [line for p in (n1, n2) for line in p.log().splitlines()
                    if "transport.peer_rejected" in line]
        assert not rejected, rejected


def test_a_member_whose_certificate_names_another_does_not_start(tmp_path: Path) -> None:
    """Its peers would refuse every message it sends: say so at start (exit 2, one line)."""
    ca = make_ca(tmp_path)
    wrong = ca.issue(tmp_path, "n2")
    argv = [*coord_argv("n1", tmp_path / "n1-data", free_port(), free_port()),
            "--peer-cert-file", str(wrong.cert), "--peer-key-file", str(wrong.key),
            "--peer-trusted-ca-file", str(ca.cert)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --peer-cert-file "), lines
    assert "not this member's name 'n1'" in lines[0] and "--peer-cert-allowed-cn" in lines[0]
    assert not (tmp_path / "n1-data").exists()
