"""Snapshot transfer in chunks (issue 15 item 3): no peer message is larger than a chunk.

Between two transports on loopback: a snapshot of many chunks arrives whole and verified;
a transfer cut midway, refused, stalled or superseded leaves no buffered state and the
next one succeeds. Then a real 3-member cluster (in this process) brings a follower that
fell far behind up to date with a snapshot of dozens of chunks.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from coord.client import Client
from coord.pb import raft_pb2
from coord.raft import ConfState, Entry, Message, MessageType, Snapshot, SnapshotMetadata
from coord.rpc.h2.client import StreamCall, StreamCallError
from coord.rpc.status import StatusCode
from coord.server import transport_snapshot
from coord.server.config import ServerConfig
from coord.server.server import CoordServer
from coord.server.transport import (
    BATCH_BYTES,
    MESSAGE_LIMIT,
    PEER_RECV_LIMIT,
    Transport,
    split_oversized,
)
from coord.server.transport_codec import wire_size
from coord.server.transport_h2 import SNAPSHOT_METHOD, write_drained
from coord.server.transport_snapshot import snapshot_chunks
from tests.helpers.procs import free_port
from tests.server.test_transport import _connected, _heartbeat, _until

pytestmark = pytest.mark.timeout(120)

CHUNK = 4096


def _snap(frm: int, to: int, data: bytes, term: int = 1) -> Message:
    md = SnapshotMetadata(index=100, term=term, conf_state=ConfState((1, 2), ()))
    return Message(MessageType.SNAP, to, frm, term=term, snapshot=Snapshot(md, data))


def _data(n: int) -> bytes:
    return bytes((i * 7 + i // 251) & 0xFF for i in range(n))


def _address(sender: Transport) -> str:
    return sender.peers()[2]


def test_a_snapshot_of_many_chunks_arrives_whole() -> None:
    async def body() -> None:
        sender, receiver, server, delivered, _ = await _connected()
        reports: list[tuple[int, bool]] = []
        sender.report_snapshot = lambda peer, ok: reports.append((peer, ok))
        sender.snapshot_chunk = CHUNK
        data = _data(25 * CHUNK + 123)
        try:
            sender.send([_snap(1, 2, data)])
            await _until(lambda: reports == [(2, True)])
            [m] = delivered
            assert m.type == MessageType.SNAP and m.snapshot is not None
            assert m.snapshot.data == data
            assert m.snapshot.metadata == _snap(1, 2, b"").snapshot.metadata  # type: ignore[union-attr]
            assert receiver.snapshots.active == {}
        finally:
            await sender.stop()
            receiver.stopped = True
            await server.stop(0)
    asyncio.run(body())


def test_chunks_are_bounded_and_carry_the_envelope_once() -> None:
    data = _data(10 * CHUNK + 1)
    chunks = list(snapshot_chunks(_snap(1, 2, data), 9, 1, CHUNK))
    assert len(chunks) == 11
    assert [c.offset for c in chunks] == [i * CHUNK for i in range(11)]
    assert all(len(c.data) <= CHUNK for c in chunks)
    assert chunks[0].message.snapshot.data == b"" and chunks[0].total_size == len(data)
    assert not any(c.HasField("message") for c in chunks[1:])
    assert [c.last for c in chunks] == [False] * 10 + [True]
    assert chunks[-1].crc32 == zlib.crc32(data)
    assert b"".join(c.data for c in chunks) == data
    # the default chunk with its envelope fits the peer port's limit with room to spare
    big = next(snapshot_chunks(_snap(1, 2, b"\0" * (3 << 20)), 9, 1,
                               transport_snapshot.SNAPSHOT_CHUNK))
    assert big.ByteSize() < PEER_RECV_LIMIT // 2


async def _open(sender: Transport) -> StreamCall:
    return await StreamCall.open(_address(sender), SNAPSHOT_METHOD, connect_timeout=3)


def _raw_chunks(data: bytes, term: int = 1) -> list[raft_pb2.SnapshotChunk]:
    return list(snapshot_chunks(_snap(1, 2, data, term), 1, 1, CHUNK))


async def _refused(call: StreamCall) -> StreamCallError:
    with pytest.raises(StreamCallError) as err:
        async with asyncio.timeout(10):
            await call.finish()
    call.close()
    return err.value


def test_a_transfer_cut_midway_leaves_nothing_and_the_next_one_succeeds() -> None:
    async def body() -> None:
        sender, receiver, server, delivered, _ = await _connected()
        reports: list[bool] = []
        sender.report_snapshot = lambda peer, ok: reports.append(ok)
        sender.snapshot_chunk = CHUNK
        data = _data(20 * CHUNK)
        try:
            call = await _open(sender)
            for chunk in _raw_chunks(data)[:8]:
                await write_drained(call, chunk)
            await _until(lambda: receiver.snapshots.buffered >= 7 * CHUNK)
            call.close()  # the sender dies midway (RST_STREAM, connection closed)
            await _until(lambda: receiver.snapshots.active == {})
            assert receiver.snapshots.buffered == 0 and delivered == []
            sender.send([_snap(1, 2, data)])  # the core's next attempt
            await _until(lambda: reports == [True])
            assert [m.snapshot.data for m in delivered if m.snapshot] == [data]
            assert receiver.snapshots.active == {}
        finally:
            await sender.stop()
            receiver.stopped = True
            await server.stop(0)
    asyncio.run(body())


def test_refused_transfers_leave_nothing() -> None:
    """Too large a declared size (refused before any data is kept), a gap, more data than
    declared, a bad CRC, a stream that ends early, a non-SNAP envelope, a non-member."""
    async def body() -> None:
        sender, receiver, server, delivered, _ = await _connected()
        receiver.snapshots.max_snapshot = 64 * CHUNK
        receiver.is_member = lambda peer: peer in (1, 2)
        data = _data(8 * CHUNK)
        cases: dict[str, list[raft_pb2.SnapshotChunk]] = {}
        c = _raw_chunks(data)
        c[0].total_size = 65 * CHUNK
        cases["over this member's limit"] = c[:1]
        cases["expected"] = [_raw_chunks(data)[0], _raw_chunks(data)[2]]
        c = _raw_chunks(data)
        c[0].total_size = CHUNK
        cases["more data than the declared"] = c
        c = _raw_chunks(data)
        c[-1].crc32 ^= 1
        cases["CRC-32"] = c
        cases["ended before its last chunk"] = _raw_chunks(data)[:3]
        c = _raw_chunks(data)
        c[0].message.type = int(MessageType.HEARTBEAT)
        cases["HEARTBEAT message on the snapshot stream"] = c
        c = _raw_chunks(data)
        setattr(c[0], "from", 0xBAD)
        setattr(c[0].message, "from", 0xBAD)
        cases["not a member"] = c
        try:
            for reason, chunks in cases.items():
                call = await _open(sender)
                for chunk in chunks:
                    await write_drained(call, chunk)
                err = await _refused(call)
                assert err.status is StatusCode.FAILED_PRECONDITION, (reason, err)
                assert reason in str(err), (reason, err)
                assert receiver.snapshots.active == {}
            assert delivered == []
        finally:
            await sender.stop()
            receiver.stopped = True
            await server.stop(0)
    asyncio.run(body())


def test_a_stalled_transfer_is_dropped_and_a_newer_one_supersedes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport_snapshot, "CHUNK_TIMEOUT", 0.5)

    async def body() -> None:
        sender, receiver, server, delivered, _ = await _connected()
        data = _data(6 * CHUNK)
        try:
            stalled = await _open(sender)
            await write_drained(stalled, _raw_chunks(data)[0])
            await _until(lambda: receiver.snapshots.active != {})
            await _until(lambda: stalled.closed)  # nothing more for CHUNK_TIMEOUT: dropped
            err = await _refused(stalled)
            assert "no snapshot chunk" in str(err)
            assert receiver.snapshots.active == {}
            # Two transfers from the same member: the second supersedes the first.
            first = await _open(sender)
            for chunk in _raw_chunks(data)[:3]:
                await write_drained(first, chunk)
            await _until(lambda: receiver.snapshots.buffered == 3 * CHUNK)
            second = await _open(sender)
            newer = _data(5 * CHUNK)[::-1]
            for chunk in _raw_chunks(newer, term=2):
                await write_drained(second, chunk)
            async with asyncio.timeout(10):
                await second.finish()
            second.close()
            await _until(lambda: first.closed)  # refused at once, not at its next chunk
            err = await _refused(first)
            assert "superseded" in str(err)
            assert [m.snapshot.data for m in delivered if m.snapshot] == [newer]
            assert receiver.snapshots.active == {}
        finally:
            await sender.stop()
            receiver.stopped = True
            await server.stop(0)
    asyncio.run(body())


def test_batches_and_forwarded_proposals_fit_the_peer_limit() -> None:
    entries = tuple(Entry(0, 0, data=b"p" * (300 << 10)) for i in range(40))
    prop = Message(MessageType.PROP, 2, 1, entries=entries)
    parts = split_oversized(prop)
    assert len(parts) > 1 and tuple(e for p in parts for e in p.entries) == entries
    assert all(wire_size(p) <= BATCH_BYTES for p in parts)
    assert split_oversized(_heartbeat(1, 2, 1)) == [_heartbeat(1, 2, 1)]
    assert MESSAGE_LIMIT < PEER_RECV_LIMIT

    async def body() -> None:
        sender, receiver, server, delivered, _ = await _connected()
        try:
            apps = [Message(MessageType.APP, 2, 1, term=1, index=i, log_term=1,
                            entries=(Entry(1, i + 1, data=b"a" * (700 << 10)),))
                    for i in range(12)]
            # A message too large for the peer port (a bug) is dropped alone, as lost.
            huge = Message(MessageType.APP, 2, 1, term=1, index=99, log_term=1,
                           entries=(Entry(1, 100, data=b"h" * PEER_RECV_LIMIT),))
            sender.send([prop, huge, *apps])
            await _until(lambda: sum(len(m.entries) for m in delivered) == 52)
            assert all(m.index != 99 for m in delivered)
            assert receiver.rejected == {}
        finally:
            await sender.stop()
            receiver.stopped = True
            await server.stop(0)
    asyncio.run(body())


# ------------------------------------------------------------------ a real cluster
def _cluster_configs(tmp_path: Path) -> list[ServerConfig]:
    peers = {f"n{i}": f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
    return [ServerConfig(name=n, data_dir=tmp_path / n, listen_client=f"127.0.0.1:{free_port()}",
                         listen_peer=p, initial_cluster=peers, snapshot_count=50,
                         snapshot_bytes=64 << 10)
            for n, p in peers.items()]


@pytest.fixture
def configs(tmp_path: Path) -> Iterator[list[ServerConfig]]:
    yield _cluster_configs(tmp_path)


def test_a_far_behind_follower_catches_up_by_a_chunked_snapshot(
        configs: list[ServerConfig]) -> None:
    async def start(config: ServerConfig) -> CoordServer:
        server = CoordServer(config)
        server.node.transport.snapshot_chunk = CHUNK
        await server.start()
        return server

    async def body() -> None:
        servers = {c.name: await start(c) for c in configs}
        received: list[int] = []
        try:
            async with Client([c.listen_client for c in configs], timeout=10) as cli:
                await cli.put("/warm", "up")
            lag = next(c for c in configs if not servers[c.name].node.is_leader)
            others = [c.listen_client for c in configs if c is not lag]
            await servers[lag.name].stop(0)  # a follower falls far behind
            async with Client(others, timeout=10) as cli:
                value = "v" * 2000
                for i in range(0, 400, 40):
                    await asyncio.gather(*(cli.put(f"/s/{j:04d}", value)
                                           for j in range(i, i + 40)))
            back = CoordServer(lag)
            back.node.transport.snapshot_chunk = CHUNK
            receive = back.node.transport.snapshots.receive

            async def counting(chunks, auth=None):  # type: ignore[no-untyped-def]
                m = await receive(chunks, auth)
                received.append(len(m.snapshot.data))
                return m
            back.node.transport.snapshots.receive = counting  # type: ignore[method-assign]
            await back.start()
            servers[lag.name] = back
            leader = next(s for s in servers.values() if s.node.is_leader)
            await _until(lambda: back.node.applied_index >= leader.node.applied_index, 60)
            assert received and max(received) > 20 * CHUNK  # many chunks
            assert back.node.transport.snapshots.active == {}
            async with Client([lag.listen_client], timeout=10) as cli:
                got = await cli.get("/s/", prefix=True, serializable=True)
                assert len(got.kvs) == 400
        finally:
            for s in servers.values():
                await s.stop(0)
    asyncio.run(body())
