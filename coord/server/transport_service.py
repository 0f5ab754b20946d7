"""The peer port's gRPC service: what a member answers on ``--listen-peer``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import structlog

from coord.pb import raft_pb2
from coord.raft import Message
from coord.rpc.handlers import Context, MethodHandler, service_handlers
from coord.rpc.status import StatusCode
from coord.server.transport_h2 import PEER_SERVICE
from coord.server.transport_intake import PeerRejected
from coord.server.transport_snapshot import SnapshotReceiver, SnapshotRefused

log = structlog.get_logger("coord.transport")

Ctx = Context


class LinkHook(Protocol):
    """Fault injection, for tests only (``tests/helpers/faults.py``): which links are cut,
    a delay before each outgoing batch, and the ``Fault`` RPC that sets them."""

    def cut(self, peer: int) -> bool:
        """Whether messages to and from member ``peer`` are dropped."""

    async def before_send(self) -> None:
        """Awaited before each outgoing batch (a delay)."""

    async def control(self, request: raft_pb2.FaultRequest) -> raft_pb2.FaultResponse:
        """Answer the ``Fault`` RPC."""


class PeerEndpoint(Protocol):
    """What the service needs of the transport that owns it (the transport implements it;
    a Protocol so that this module does not import the transport back)."""

    stopped: bool
    snapshots: SnapshotReceiver
    hook: LinkHook | None

    def accept(self, batch: raft_pb2.MessageBatch, frm: int,
               auth: dict[str, list[bytes]] | None = None) -> None:
        """Check one incoming batch (from a connection whose certificate is ``auth``) and
        hand its messages to the node."""

    def check_call(self, method: str, auth: dict[str, list[bytes]],
                   member_id: int = 0) -> None:
        """Raise PeerRejected unless a peer call's certificate is member ``member_id``'s
        (0: any member's), when peer identity is checked."""

    def stream_lost(self, frm: int) -> None:
        """The ``Send`` stream from member ``frm`` ended."""

    def hand_over(self, frm: int, messages: list[Message]) -> None:
        """Hand already-checked messages from member ``frm`` to the node."""


class PeerService:
    """The peer-port gRPC service (:func:`peer_handlers` serves it)."""

    def __init__(self, transport: PeerEndpoint,
                 lease_renew: Callable[[int], Awaitable[tuple[int, bool]]],
                 join: Callable[[str], tuple[int, int]],
                 lease_ttl: Callable[[int], tuple[int, int, list[bytes]] | None]) -> None:
        self.t = transport
        self._lease_renew = lease_renew
        self._lease_ttl = lease_ttl
        self._join = join

    async def Send(self, request_iterator: AsyncIterator[raft_pb2.MessageBatch],
                   context: Ctx) -> raft_pb2.SendResponse:
        frm = 0
        auth = context.auth_context()
        try:
            async for batch in request_iterator:
                try:
                    self.t.accept(batch, frm, auth)
                except PeerRejected as err:
                    await context.abort(StatusCode.FAILED_PRECONDITION, str(err))
                frm = frm or getattr(batch, "from")
        except asyncio.CancelledError:
            # The sender's connection broke (its process died, or it closed the stream).
            if frm and not self.t.stopped:
                self.t.stream_lost(frm)
            raise
        return raft_pb2.SendResponse()

    async def SendSnapshot(self, request_iterator: AsyncIterator[raft_pb2.SnapshotChunk],
                           context: Ctx) -> raft_pb2.SendResponse:
        """One snapshot in chunks (:mod:`coord.server.transport_snapshot`): handed to the
        core only once complete and verified."""
        try:
            m = await self.t.snapshots.receive(request_iterator, context.auth_context())
        except PeerRejected as err:
            await context.abort(StatusCode.FAILED_PRECONDITION, str(err))
        except SnapshotRefused as err:
            log.warning("transport.snapshot_refused", reason=str(err))
            await context.abort(StatusCode.FAILED_PRECONDITION, str(err))
        hook = self.t.hook
        if hook is not None and hook.cut(m.frm):
            await context.abort(StatusCode.UNAVAILABLE, "link cut")
        self.t.hand_over(m.frm, [m])
        return raft_pb2.SendResponse()

    async def LeaseRenew(self, request: raft_pb2.LeaseRenewRequest,
                         context: Ctx) -> raft_pb2.LeaseRenewResponse:
        await self._check(context, "LeaseRenew")
        ttl, not_leader = await self._lease_renew(request.id)
        return raft_pb2.LeaseRenewResponse(ttl=ttl, not_leader=not_leader)

    async def LeaseTimeToLive(self, request: raft_pb2.LeaseTTLRequest,
                              context: Ctx) -> raft_pb2.LeaseTTLResponse:
        await self._check(context, "LeaseTimeToLive")
        got = self._lease_ttl(request.id)
        if got is None:
            return raft_pb2.LeaseTTLResponse(not_leader=True)
        ttl, granted, keys = got
        return raft_pb2.LeaseTTLResponse(ttl=ttl, granted=granted, keys=keys)

    async def Join(self, request: raft_pb2.MemberJoinRequest,
                   context: Ctx) -> raft_pb2.MemberJoinResponse:
        member_id, cluster_id = self._join(request.peer)
        if member_id:  # only the member added with that peer URL learns the cluster id
            await self._check(context, "Join", member_id)
        return raft_pb2.MemberJoinResponse(member_id=member_id,
                                           cluster_id=cluster_id if member_id else 0,
                                           found=member_id != 0)

    async def _check(self, context: Ctx, method: str, member_id: int = 0) -> None:
        """End the call FAILED_PRECONDITION unless its certificate is a member's
        (``member_id``'s, if given), when peer identity is checked."""
        try:
            self.t.check_call(method, context.auth_context(), member_id)
        except PeerRejected as err:
            await context.abort(StatusCode.FAILED_PRECONDITION, str(err))

    async def Fault(self, request: raft_pb2.FaultRequest,
                    context: Ctx) -> raft_pb2.FaultResponse:
        hook = self.t.hook
        if hook is None:
            await context.abort(StatusCode.PERMISSION_DENIED,
                                "fault injection is disabled (only tests install it)")
        return await hook.control(request)


def peer_handlers(service: PeerService) -> dict[str, MethodHandler]:
    """The peer port's method table (``/raftcronpb.Peer/Send`` ... → handler)."""
    return service_handlers(PEER_SERVICE, service)
