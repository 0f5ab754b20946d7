"""The peer calls a member makes on coord's own HTTP/2 client (``coord.rpc.h2.client``):
the unary calls (:class:`H2PeerStub`) and the two client streams, ``Send`` (Raft message
batches) and ``SendSnapshot`` (a snapshot in chunks), written with :func:`write_drained`."""

from __future__ import annotations

from ssl import SSLContext
from typing import TypeVar

from google.protobuf.message import Message as ProtoMessage

from coord.aiotools import within
from coord.pb import raft_pb2
from coord.rpc.h2.client import StreamCall, unary_call

PEER_SERVICE = raft_pb2.DESCRIPTOR.services_by_name["Peer"]
SEND_METHOD = f"/{PEER_SERVICE.full_name}/Send"
SNAPSHOT_METHOD = f"/{PEER_SERVICE.full_name}/SendSnapshot"
CONNECT_TIMEOUT = 1.0
"""How long the sender waits for a peer's TCP connection and HTTP/2 SETTINGS."""
DRAIN_TIMEOUT = 5.0
"""How long the sender waits without any progress (no flow-control credit, the socket
not writable) before it drops the stream and reconnects."""
RESPONSE_LIMIT = 1 << 20
"""The largest answer a peer call accepts (the peer service's answers are a few bytes)."""


def rpc_failed(err: BaseException) -> bool:
    """Whether ``err`` is a failed peer call (either HTTP/2 stack's), not a bug."""
    return isinstance(err, ConnectionError)


async def write_drained(call: StreamCall, message: ProtoMessage) -> None:
    """Write one message on ``call`` and wait until it is framed within flow control.
    A peer that makes no progress for :data:`DRAIN_TIMEOUT` (it stopped reading, or
    vanished without closing the connection) fails the call with a ConnectionError."""
    call.write(message.SerializeToString())
    while call.blocked:
        before = call.buffered
        try:
            await within(call.drain(), DRAIN_TIMEOUT)
        except TimeoutError:
            if call.buffered < before:
                continue  # slow but reading: keep going
            raise ConnectionError(f"peer has not read for {DRAIN_TIMEOUT:.0f} s") from None
    await call.drain()  # raises if the call died meanwhile


M = TypeVar("M", bound=ProtoMessage)


class H2PeerStub:
    """The peer service's unary calls on coord's HTTP/2 client, called as on a grpc.aio
    stub: ``await stub.LeaseRenew(request, timeout=3.0)``. Each call has a connection of
    its own (these calls are rare: lease renewals forwarded by a follower, joining). A
    failure raises :class:`coord.rpc.h2.client.StreamCallError`, a ``ConnectionError``."""

    def __init__(self, address: str, ssl: SSLContext | None = None) -> None:
        self.address = address
        self.ssl = ssl
        """The peer TLS dialer's context (``--peer-cert-file``...), None: plaintext."""

    async def _call(self, name: str, request: ProtoMessage, response_type: type[M],
                    timeout: float) -> M:
        raw = await unary_call(self.address, f"/{PEER_SERVICE.full_name}/{name}",
                               request.SerializeToString(), timeout=timeout,
                               max_response=RESPONSE_LIMIT, ssl=self.ssl)
        return response_type.FromString(raw)

    async def send_batch(self, batch: raft_pb2.MessageBatch, timeout: float) -> None:
        """One batch on a ``Send`` stream of its own, and the peer's answer: a refused
        batch fails the call with the peer's status (tests speak as a forger this way)."""
        call = await StreamCall.open(self.address, SEND_METHOD, connect_timeout=timeout,
                                     max_response=RESPONSE_LIMIT, ssl=self.ssl)
        try:
            await within(write_drained(call, batch), timeout)
            await within(call.finish(), timeout)
        finally:
            call.close()

    async def LeaseRenew(self, request: raft_pb2.LeaseRenewRequest,
                         timeout: float) -> raft_pb2.LeaseRenewResponse:
        return await self._call("LeaseRenew", request, raft_pb2.LeaseRenewResponse, timeout)

    async def LeaseTimeToLive(self, request: raft_pb2.LeaseTTLRequest,
                              timeout: float) -> raft_pb2.LeaseTTLResponse:
        return await self._call("LeaseTimeToLive", request, raft_pb2.LeaseTTLResponse, timeout)

    async def Join(self, request: raft_pb2.MemberJoinRequest,
                   timeout: float) -> raft_pb2.MemberJoinResponse:
        return await self._call("Join", request, raft_pb2.MemberJoinResponse, timeout)


class H2Send:
    """``Send`` on a :class:`StreamCall` with the two methods the sender uses of a grpc.aio
    stream call: ``write`` (waits for flow control) and ``cancel``."""

    def __init__(self, call: StreamCall) -> None:
        self.call = call

    async def write(self, batch: raft_pb2.MessageBatch) -> None:
        await write_drained(self.call, batch)

    def cancel(self) -> None:
        self.call.close()
