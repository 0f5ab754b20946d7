"""Peer TLS (etcd's ``--peer-cert-file``, ``--peer-key-file``, ``--peer-trusted-ca-file``,
``--peer-client-cert-auth``, ``--peer-cert-allowed-cn``): a 3-member cluster forms over
mutual TLS on its peer ports and survives a kill -9 of its leader; the peer port refuses a
connection with no certificate, one from another CA, and one whose common name is not the
allowed one, and keeps serving members. Refusals are bounded by socket timeouts."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from coord.client import Client
from tests.helpers.procs import (
    REPO,
    Proc,
    coord_argv,
    free_port,
    port_open,
    process_group,
    wait_until,
)
from tests.tls.certs import Pair
from tests.tls.conftest import Certs
from tests.tls.test_server_tls import closed_on_us

pytestmark = pytest.mark.timeout(120)
ALLOWED_CN = "server"  # the CN of certs.server, every member's certificate here


@dataclass
class Cluster:
    procs: dict[str, Proc]
    cports: dict[str, int]
    pports: dict[str, int]


def peer_flags(certs: Certs) -> list[str]:
    return ["--peer-cert-file", str(certs.server.cert), "--peer-key-file", str(certs.server.key),
            "--peer-trusted-ca-file", str(certs.ca.cert), "--peer-client-cert-auth",
            "--peer-cert-allowed-cn", ALLOWED_CN]


async def leader_of(cport: int) -> int:
    async with Client([f"127.0.0.1:{cport}"], timeout=2) as c:
        return (await c.status()).leader


def leader(cport: int) -> int:
    try:
        return asyncio.run(leader_of(cport))
    except Exception:  # noqa: BLE001 - not up yet, or no leader: poll again
        return 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Cluster]:
    names = ["n1", "n2", "n3"]
    cports = {n: free_port() for n in names}
    pports = {n: free_port() for n in names}
    initial = ",".join(f"{n}=127.0.0.1:{pports[n]}" for n in names)
    with process_group(tmp_path_factory.mktemp("peer-tls")) as group:
        procs = {}
        for n in names:
            argv = [*coord_argv(n, group.workdir / f"{n}-data", cports[n], pports[n], initial),
                    *peer_flags(certs)]
            procs[n] = group.spawn(n, argv, cports[n], env={"PYTHONPATH": str(REPO)})
        for n in names:
            wait_until(lambda n=n: port_open(cports[n]) or not procs[n].alive(), 30, n)
            assert procs[n].alive(), procs[n].log()
        wait_until(lambda: all(leader(cports[n]) for n in names), 30,
                   "a leader elected over peer mTLS")
        yield Cluster(procs, cports, pports)


def peer_connection(port: int, certs: Certs, pair: Pair | None) -> bool:
    """Whether the peer port serves HTTP/2 to a TLS client with ``pair`` (False: cut off)."""
    ctx = ssl.create_default_context(cafile=str(certs.ca.cert))
    ctx.set_alpn_protocols(["h2"])
    if pair is not None:
        ctx.load_cert_chain(pair.cert, pair.key)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        except (ssl.SSLError, ConnectionResetError):
            return False
        with tls:
            return not closed_on_us(tls)


@pytest.mark.parametrize("who", ["no certificate", "another CA", "a CN not allowed"])
def test_the_peer_port_refuses(cluster: Cluster, certs: Certs, who: str) -> None:
    pair = {"no certificate": None, "another CA": certs.stranger,
            "a CN not allowed": certs.client}[who]
    port = cluster.pports["n1"]
    assert not peer_connection(port, certs, pair)
    assert peer_connection(port, certs, certs.server)  # a member's certificate still works


def test_the_cluster_replicates_and_survives_a_kill9_of_its_leader(cluster: Cluster) -> None:
    async def put_then_read(put_port: int, read_port: int, key: bytes) -> bytes:
        async with Client([f"127.0.0.1:{put_port}"], timeout=5) as c:
            await c.put(key, b"over-peer-tls")
        async with Client([f"127.0.0.1:{read_port}"], timeout=5) as c:
            return (await c.get(key)).kvs[0].value

    c = cluster.cports
    assert asyncio.run(put_then_read(c["n1"], c["n3"], b"k1")) == b"over-peer-tls"
    lead = leader(c["n1"])
    ids = {}
    for n in c:
        async def member_id(port: int = c[n]) -> int:
            async with Client([f"127.0.0.1:{port}"], timeout=5) as cl:
                return (await cl.status()).header.member_id
        ids[asyncio.run(member_id())] = n
    victim = ids[lead]
    cluster.procs[victim].kill9()
    rest = [n for n in c if n != victim]
    wait_until(lambda: all(leader(c[n]) not in (0, lead) for n in rest), 30,
               "a new leader over peer mTLS")
    assert asyncio.run(put_then_read(c[rest[0]], c[rest[1]], b"k2")) == b"over-peer-tls"
