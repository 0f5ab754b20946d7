"""The peer transport over coord's own HTTP/2 code: messages arrive; a peer that stops
reading does not wedge the sender (it reconnects and reports the peer unreachable); a
broken ``Send`` stream is reported, so that a follower can stop waiting for a dead leader."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coord.pb import raft_pb2
from coord.raft import Message, MessageType
from coord.rpc.h2.client import StreamCallError
from coord.rpc.h2.server import SETTING, SETTINGS, SETTINGS_INITIAL_WINDOW_SIZE, H2Server, frame
from coord.rpc.status import StatusCode
from coord.server import transport_h2
from coord.server.transport import (
    H2PeerStub,
    PeerService,
    Transport,
    message_to_pb,
    peer_handlers,
)


def _transport(member_id: int, *, delivered: list[Message] | None = None,
               unreachable: list[int] | None = None,
               lost: list[int] | None = None) -> Transport:
    delivered = [] if delivered is None else delivered
    unreachable = [] if unreachable is None else unreachable
    lost = [] if lost is None else lost
    return Transport(
        member_id, cluster_id=lambda: 1, deliver=delivered.extend,
        report_unreachable=unreachable.append, report_snapshot=lambda peer, ok: None,
        name_of=lambda peer: f"m{peer}", stream_lost=lost.append)


async def _peer_server(receiver: Transport) -> tuple[H2Server, int]:
    handlers = peer_handlers(
        PeerService(receiver, _no_renew, lambda peer: (0, 0), lambda lease: None))
    server = H2Server(lambda call: handlers.get(call.method), max_receive=2**31 - 1)
    return server, await server.start("127.0.0.1:0")


async def _connected() -> tuple[Transport, Transport, H2Server, list[Message], list[int]]:
    """Member 1's transport sending to member 2's, which serves the peer port and records
    what it is delivered and which members' streams it lost."""
    delivered: list[Message] = []
    lost: list[int] = []
    receiver = _transport(2, delivered=delivered, lost=lost)
    server, port = await _peer_server(receiver)
    sender = _transport(1)
    sender.set_peer(2, f"127.0.0.1:{port}")
    return sender, receiver, server, delivered, lost


async def _no_renew(lease: int) -> tuple[int, bool]:
    return 0, True


async def _until(cond: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


def _heartbeat(frm: int, to: int, term: int) -> Message:
    return Message(MessageType.HEARTBEAT, to, frm, term=term, commit=term)


def test_messages_arrive_and_a_broken_stream_is_reported() -> None:
    async def body() -> None:
        sender, receiver, server, delivered, lost = await _connected()
        try:
            sender.send([_heartbeat(1, 2, t) for t in range(1, 201)])
            await _until(lambda: len(delivered) == 200)
            assert [m.term for m in delivered] == list(range(1, 201))
            assert lost == []
            # The sender goes away (as a killed leader's sockets do): the receiver learns
            # which member's stream broke.
            await sender.stop()
            await _until(lambda: lost == [1])
        finally:
            receiver.stopped = True
            await server.stop(0)
    asyncio.run(body())


def test_a_stopped_receiver_does_not_report_its_own_shutdown() -> None:
    async def body() -> None:
        sender, receiver, server, delivered, lost = await _connected()
        try:
            sender.send([_heartbeat(1, 2, 1)])
            await _until(lambda: len(delivered) == 1)
            receiver.stopped = True  # as RaftNode.stop does before the peer port closes
            await server.stop(0)
            assert lost == []
        finally:
            await sender.stop()
    asyncio.run(body())


def test_a_peer_that_stops_reading_does_not_wedge_the_sender(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that accepts the connection and then gives no flow-control credit (a hung
    process, a host gone without a RST): after DRAIN_TIMEOUT the sender drops the stream,
    reports the peer unreachable and connects again."""
    monkeypatch.setattr(transport_h2, "DRAIN_TIMEOUT", 0.3)

    async def body() -> None:
        connections: list[asyncio.StreamWriter] = []

        async def stuck_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(writer)
            # SETTINGS with a stream window of 0: not one DATA byte may be sent.
            writer.write(frame(SETTINGS, 0, 0, SETTING.pack(SETTINGS_INITIAL_WINDOW_SIZE, 0)))
            await writer.drain()
            await reader.read(-1)  # swallow everything until the sender hangs up

        server = await asyncio.start_server(stuck_peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        unreachable: list[int] = []
        sender = _transport(1, unreachable=unreachable)
        try:
            sender.set_peer(2, f"127.0.0.1:{port}")
            sender.send([_heartbeat(1, 2, 1)])
            await _until(lambda: unreachable == [2])
            sender.send([_heartbeat(1, 2, 2)])
            await _until(lambda: len(connections) >= 2)
        finally:
            await sender.stop()
            for w in connections:
                w.close()
            server.close()
            await server.wait_closed()
    asyncio.run(body())


def test_unary_peer_calls_on_the_h2_client() -> None:
    """One-batch sends, forwarded lease calls and joins use coord's own client (no grpcio):
    answers arrive, a status from the peer service, a deadline and an absent peer each
    fail the call with a ConnectionError."""
    hang = asyncio.Event()

    async def renew(lease: int) -> tuple[int, bool]:
        if lease == 7:
            await hang.wait()
        return 30, False

    async def body() -> None:
        receiver = _transport(2)
        service = PeerService(receiver, renew, lambda peer: (5, 9), lambda lease: (10, 30, [b"k"]))
        handlers = peer_handlers(service)
        server = H2Server(lambda call: handlers.get(call.method), max_receive=2**31 - 1)
        port = await server.start("127.0.0.1:0")
        stub = H2PeerStub(f"127.0.0.1:{port}")
        try:
            renewed = await stub.LeaseRenew(raft_pb2.LeaseRenewRequest(id=1), timeout=3)
            assert (renewed.ttl, renewed.not_leader) == (30, False)
            ttl = await stub.LeaseTimeToLive(raft_pb2.LeaseTTLRequest(id=1), timeout=3)
            assert (ttl.ttl, ttl.granted, list(ttl.keys)) == (10, 30, [b"k"])
            joined = await stub.Join(raft_pb2.MemberJoinRequest(peer="x:1"), timeout=3)
            assert (joined.member_id, joined.cluster_id, joined.found) == (5, 9, True)
            batch = raft_pb2.MessageBatch(cluster_id=1,
                                          messages=[message_to_pb(_heartbeat(1, 2, 3))])
            setattr(batch, "from", 1)
            await stub.send_batch(batch, timeout=3)
            with pytest.raises(StreamCallError) as refused:
                await stub._call("Fault", raft_pb2.FaultRequest(), raft_pb2.FaultResponse, 3)
            assert refused.value.status is StatusCode.PERMISSION_DENIED
            assert "fault injection is disabled" in str(refused.value)
            with pytest.raises(StreamCallError) as late:
                await stub.LeaseRenew(raft_pb2.LeaseRenewRequest(id=7), timeout=0.2)
            assert late.value.status is StatusCode.DEADLINE_EXCEEDED
            await _until(lambda: not any(c.streams for c in server.connections))  # cancelled
        finally:
            hang.set()
            receiver.stopped = True
            await server.stop(0)
        with pytest.raises(ConnectionError):
            await stub.LeaseRenew(raft_pb2.LeaseRenewRequest(id=1), timeout=1)
    asyncio.run(body())
