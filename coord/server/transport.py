"""Peer transport: Raft messages between members over gRPC on ``--listen-peer``.

* One sender task per peer with its own bounded queue: messages are batched (everything
  queued when the stream is ready goes in one ``MessageBatch``) and written on a long-lived
  client stream. A slow or dead peer fills only its own queue; when it is full, messages
  to that peer are dropped and the core is told (``report_unreachable``), exactly as if the
  network had lost them — Raft retransmits.
* A broken stream is reopened with exponential backoff (50 ms .. 1 s).
* Snapshots (``SNAP`` messages) go in a unary ``SendSnapshot`` call so the sender learns
  the outcome and reports it (``report_snapshot``).
* Everything goes over coord's own HTTP/2 client (``coord.rpc.h2.client``): a member
  never imports grpcio (docs/grpc-server.md).
* Fault injection (tests only): when enabled (``RAFTCRON_FAULTS=1``), the peer service's
  ``Fault`` RPC cuts links to named members in both directions or delays outgoing batches.
  When not enabled, ``Fault`` answers PERMISSION_DENIED; it is never on the client port.

The codec between ``coord.raft`` dataclasses and ``raft.proto`` lives here too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from google.protobuf.message import Message as ProtoMessage

from coord.aiotools import within
from coord.pb import raft_pb2
from coord.raft import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from coord.raft.types import LOCAL_MESSAGES
from coord.rpc.h2.client import StreamCall, unary_call
from coord.rpc.handlers import Context, MethodHandler, service_handlers
from coord.rpc.status import StatusCode

log = structlog.get_logger("coord.transport")

QUEUE_LIMIT = 4096
"""Messages queued per peer before new ones are dropped (and the peer reported unreachable)."""
BATCH_LIMIT = 512
"""Messages per MessageBatch."""
SNAPSHOT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 1.0
"""How long the sender waits for a peer's TCP connection and HTTP/2 SETTINGS."""
DRAIN_TIMEOUT = 5.0
"""How long the sender waits without any progress (no flow-control credit, the socket
not writable) before it drops the stream and reconnects."""
PEER_SERVICE = raft_pb2.DESCRIPTOR.services_by_name["Peer"]
SEND_METHOD = f"/{PEER_SERVICE.full_name}/Send"
PEER_RECV_LIMIT = 2**31 - 1
"""Peer messages are not limited (a snapshot travels as one message)."""


MAX_TERM = 1 << 62
"""The largest term a peer message may carry at all: it keeps ``term + 1`` (and every sum of
terms the core makes) far from the uint64 the wire and the WAL use — one heartbeat at term
2^64-1 used to overflow ``message_to_pb`` on every member and brick the cluster."""
MAX_TERM_STEP = 1 << 20
"""How far above this member's own term a peer message's term may be. With pre-vote, terms
rise only by real elections, one at a time, so no honest peer is a million elections ahead.
An absolute cap alone is a trap: a forged message at exactly the cap was adopted, and then
no member could ever campaign past it (a one-packet, permanent loss of leadership). With
the step, a forger climbs at most 2^20 per accepted message, and the cluster can always
elect at the term it was pushed to. A member left leaderless for several election
timeouts accepts any term up to MAX_TERM again, so one that the others moved more than a
step past (they adopted a forged term it never saw) rejoins instead of being stranded."""
MAX_INDEX = 1 << 62
"""The largest log index (or commit) a peer message may carry (2^62: ~1.5 million years of
100,000 entries a second), for the same reason."""
REJECT_LOG_INTERVAL = 10.0
"""Refused peer batches are counted always and logged at most once per this many seconds
per (reason, sender)."""


class PeerRejected(Exception):
    """A peer batch refused before it reaches the core; ``str()`` is the reason sent back
    (etcd's rafthttp answers 412 "cluster ID mismatch" / 403 for a removed member) and
    ``kind`` the counter it is counted under."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(detail or kind)
        self.kind = kind


def faults_enabled() -> bool:
    return os.environ.get("RAFTCRON_FAULTS", "") == "1"


# ---------------------------------------------------------------------- codec
def entry_to_pb(e: Entry) -> raft_pb2.RaftEntry:
    return raft_pb2.RaftEntry(term=e.term, index=e.index, type=int(e.type), data=e.data)


def entry_from_pb(p: raft_pb2.RaftEntry) -> Entry:
    return Entry(p.term, p.index, EntryType(p.type), p.data)


def snapshot_to_pb(s: Snapshot) -> raft_pb2.RaftSnapshot:
    md = s.metadata
    return raft_pb2.RaftSnapshot(index=md.index, term=md.term, voters=md.conf_state.voters,
                                 learners=md.conf_state.learners, data=s.data)


def snapshot_from_pb(p: raft_pb2.RaftSnapshot) -> Snapshot:
    cs = ConfState(tuple(p.voters), tuple(p.learners))
    return Snapshot(SnapshotMetadata(p.index, p.term, cs), p.data)


def message_to_pb(m: Message) -> raft_pb2.RaftMessage:
    pb = raft_pb2.RaftMessage(
        type=int(m.type), to=m.to, term=m.term, log_term=m.log_term, index=m.index,
        entries=[entry_to_pb(e) for e in m.entries], commit=m.commit, reject=m.reject,
        reject_hint=m.reject_hint, context=m.context)
    setattr(pb, "from", m.frm)
    if m.snapshot is not None:
        pb.snapshot.CopyFrom(snapshot_to_pb(m.snapshot))
        pb.has_snapshot = True
    return pb


def message_from_pb(p: raft_pb2.RaftMessage) -> Message:
    return Message(
        MessageType(p.type), p.to, getattr(p, "from"), p.term, p.log_term, p.index,
        tuple(entry_from_pb(e) for e in p.entries), p.commit,
        snapshot_from_pb(p.snapshot) if p.has_snapshot else None,
        p.reject, p.reject_hint, p.context)


# ---------------------------------------------------------------------- faults
@dataclass
class Faults:
    """Links cut (by member name, both directions) and a delay on outgoing batches."""

    enabled: bool = False
    cut: set[str] = field(default_factory=set)
    delay: float = 0.0


# ---------------------------------------------------------------------- sender
def rpc_failed(err: BaseException) -> bool:
    """Whether ``err`` is a failed peer call, not a bug."""
    return isinstance(err, ConnectionError)


M = TypeVar("M", bound=ProtoMessage)


class H2PeerStub:
    """The peer service's unary calls on coord's HTTP/2 client, called as on a grpc.aio
    stub: ``await stub.LeaseRenew(request, timeout=3.0)``. Each call has a connection of
    its own (these calls are rare: snapshots, lease renewals forwarded by a follower,
    joining). A failure raises :class:`coord.rpc.h2.client.StreamCallError`, a
    ``ConnectionError``."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def _call(self, name: str, request: ProtoMessage, response_type: type[M],
                    timeout: float) -> M:
        raw = await unary_call(self.address, f"/{PEER_SERVICE.full_name}/{name}",
                               request.SerializeToString(), timeout=timeout,
                               max_response=PEER_RECV_LIMIT)
        return response_type.FromString(raw)

    async def SendSnapshot(self, request: raft_pb2.MessageBatch,
                           timeout: float) -> raft_pb2.SendResponse:
        return await self._call("SendSnapshot", request, raft_pb2.SendResponse, timeout)

    async def LeaseRenew(self, request: raft_pb2.LeaseRenewRequest,
                         timeout: float) -> raft_pb2.LeaseRenewResponse:
        return await self._call("LeaseRenew", request, raft_pb2.LeaseRenewResponse, timeout)

    async def LeaseTimeToLive(self, request: raft_pb2.LeaseTTLRequest,
                              timeout: float) -> raft_pb2.LeaseTTLResponse:
        return await self._call("LeaseTimeToLive", request, raft_pb2.LeaseTTLResponse, timeout)

    async def Join(self, request: raft_pb2.MemberJoinRequest,
                   timeout: float) -> raft_pb2.MemberJoinResponse:
        return await self._call("Join", request, raft_pb2.MemberJoinResponse, timeout)


class _H2Send:
    """``Send`` on a :class:`StreamCall` with the two methods the sender uses of a grpc.aio
    stream call: ``write`` (waits for flow control) and ``cancel``."""

    def __init__(self, call: StreamCall) -> None:
        self.call = call

    async def write(self, batch: raft_pb2.MessageBatch) -> None:
        call = self.call
        call.write(batch.SerializeToString())
        while call.blocked:
            before = call.buffered
            try:
                await within(call.drain(), DRAIN_TIMEOUT)
            except TimeoutError:
                if call.buffered < before:
                    continue  # slow but reading: keep going
                # A peer that stopped reading (or vanished without closing the
                # connection): drop this stream; the sender reconnects, Raft retransmits.
                raise ConnectionError(
                    f"peer has not read for {DRAIN_TIMEOUT:.0f} s") from None
        await call.drain()  # raises if the call died meanwhile

    def cancel(self) -> None:
        self.call.close()


class _PeerSender:
    def __init__(self, transport: Transport, peer_id: int, address: str) -> None:
        self.t = transport
        self.peer_id = peer_id
        self.address = address
        self.queue: collections.deque[Message] = collections.deque()
        self.wake = asyncio.Event()
        self.stub: H2PeerStub | None = None
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.task.add_done_callback(self._supervise)
        self.snap_tasks: set[asyncio.Task[None]] = set()

    def enqueue(self, m: Message) -> None:
        if m.type == MessageType.SNAP:
            task = asyncio.get_running_loop().create_task(self._send_snapshot(m))
            self.snap_tasks.add(task)
            task.add_done_callback(self.snap_tasks.discard)
            return
        if len(self.queue) >= QUEUE_LIMIT:
            self.t.report_unreachable(self.peer_id)
            return
        self.queue.append(m)
        self.wake.set()

    def _stub(self) -> H2PeerStub:
        if self.stub is None:
            self.stub = H2PeerStub(self.address)
        return self.stub

    async def _send_snapshot(self, m: Message) -> None:
        ok = False
        try:
            if self.t.name_of(self.peer_id) in self.t.faults.cut:
                raise ConnectionError("link cut by fault injection")
            batch = raft_pb2.MessageBatch(cluster_id=self.t.cluster_id(),
                                          messages=[message_to_pb(m)])
            setattr(batch, "from", self.t.member_id)
            await self._stub().SendSnapshot(batch, timeout=SNAPSHOT_TIMEOUT)
            ok = True
            log.info("transport.snapshot_sent", to=f"{self.peer_id:x}",
                     index=m.snapshot.metadata.index if m.snapshot else 0)
        except Exception as err:
            if not rpc_failed(err):
                raise
            log.warning("transport.snapshot_failed", to=f"{self.peer_id:x}", error=str(err))
        self.t.report_snapshot(self.peer_id, ok)

    async def _run(self) -> None:
        backoff = 0.05
        call: Any = None
        try:
            while not self.t.stopped:
                if not self.queue:
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                if self.t.faults.delay:
                    await asyncio.sleep(self.t.faults.delay)
                if self.t.name_of(self.peer_id) in self.t.faults.cut:
                    self.queue.clear()
                    continue
                msgs: list[Message] = []
                while self.queue and len(msgs) < BATCH_LIMIT:
                    msgs.append(self.queue.popleft())
                batch = self._batch(msgs)
                if not batch.messages:
                    continue
                try:
                    if call is None:
                        call = await self._open_send()
                    await call.write(batch)
                    backoff = 0.05
                except Exception as err:  # noqa: BLE001 - the sender must outlive any failure
                    expected = rpc_failed(err) or isinstance(
                        err, (asyncio.InvalidStateError, OSError))
                    (log.debug if expected else log.warning)(
                        "transport.send_failed", to=f"{self.peer_id:x}", error=repr(err))
                    if call is not None:
                        call.cancel()
                    call = None
                    self.queue.clear()
                    self.t.report_unreachable(self.peer_id)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
        finally:
            if call is not None:  # also when the sender is cancelled (Transport.stop)
                call.cancel()

    def _batch(self, msgs: list[Message]) -> raft_pb2.MessageBatch:
        """The batch to send; a message with a field out of the wire's range (a bug or a
        corrupt state, not I/O) is logged and dropped alone, as a lost message."""
        batch = raft_pb2.MessageBatch(cluster_id=self.t.cluster_id())
        setattr(batch, "from", self.t.member_id)
        add = batch.messages.append
        for m in msgs:
            try:
                add(message_to_pb(m))
            except ValueError as err:
                log.error("transport.unencodable_message", to=f"{self.peer_id:x}",
                          type=m.type.name, term=m.term, error=repr(err))
        return batch

    def _supervise(self, task: asyncio.Task[None]) -> None:
        """Done-callback of the sender task: a sender that ended other than by being
        cancelled or stopped is logged and restarted (it used to die silently, leaving the
        peer unreachable for good)."""
        if task.cancelled() or self.t.stopped or self.t._peers.get(self.peer_id) is not self:
            return
        exc = task.exception()
        log.error("transport.sender_died", to=f"{self.peer_id:x}", error=repr(exc))
        self.t.sender_restarts += 1
        self.queue.clear()
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.task.add_done_callback(self._supervise)

    async def _open_send(self) -> Any:
        """The long-lived ``Send`` stream to this peer: coord's own HTTP/2 client
        (:mod:`coord.rpc.h2.client`, a tenth of grpc.aio's CPU per write)."""
        return _H2Send(await StreamCall.open(self.address, SEND_METHOD,
                                             connect_timeout=CONNECT_TIMEOUT))

    async def close(self) -> None:
        self.task.cancel()
        for t in list(self.snap_tasks):
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


class Transport:
    """Sends the core's messages to peers; hands received ones to ``deliver``."""

    def __init__(self, member_id: int, *, cluster_id: Callable[[], int],
                 deliver: Callable[[list[Message]], None],
                 report_unreachable: Callable[[int], None],
                 report_snapshot: Callable[[int, bool], None],
                 name_of: Callable[[int], str],
                 stream_lost: Callable[[int], None] = lambda peer: None,
                 is_member: Callable[[int], bool] = lambda peer: True,
                 term_bound: Callable[[], int] = lambda: MAX_TERM) -> None:
        self.member_id = member_id
        self.is_member = is_member
        self.term_bound = term_bound
        """The highest term a peer message may carry now (RaftNode: its term +
        MAX_TERM_STEP while it has had a leader lately, MAX_TERM once it has been leaderless
        for a while, so a member the others moved far past can still rejoin)."""
        """Whether an id is a member (voter or learner) of the current configuration."""
        self.rejected: collections.Counter[str] = collections.Counter()
        """Refused peer batches by reason (see :meth:`check`)."""
        self._reject_logged: dict[tuple[str, int], float] = {}
        self.sender_restarts = 0
        """Sender tasks that died and were restarted (see ``_PeerSender._supervise``)."""
        self.cluster_id = cluster_id
        self.deliver = deliver
        self.report_unreachable = report_unreachable
        self.report_snapshot = report_snapshot
        self.name_of = name_of
        self.stream_lost = stream_lost
        self.last_heard: dict[int, float] = {}
        """When a batch from each peer last arrived (monotonic seconds)."""
        """Called with a peer's id when the stream it was sending us messages on breaks."""
        self.faults = Faults(enabled=faults_enabled())
        self.stopped = False
        self._peers: dict[int, _PeerSender] = {}

    def set_peer(self, peer_id: int, address: str) -> None:
        if peer_id == self.member_id or not address:
            return
        cur = self._peers.get(peer_id)
        if cur is not None and cur.address == address:
            return
        if cur is not None:
            asyncio.get_running_loop().create_task(cur.close())
        self._peers[peer_id] = _PeerSender(self, peer_id, address)

    def remove_peer(self, peer_id: int) -> None:
        cur = self._peers.pop(peer_id, None)
        if cur is not None:
            asyncio.get_running_loop().create_task(cur.close())

    def peers(self) -> dict[int, str]:
        return {i: p.address for i, p in self._peers.items()}

    def send(self, msgs: list[Message]) -> None:
        for m in msgs:
            sender = self._peers.get(m.to)
            if sender is None:
                continue
            sender.enqueue(m)

    def stub(self, peer_id: int) -> Any:
        sender = self._peers.get(peer_id)
        return sender._stub() if sender is not None else None

    async def stop(self) -> None:
        self.stopped = True
        for p in list(self._peers.values()):
            await p.close()
        self._peers.clear()

    def check(self, batch: raft_pb2.MessageBatch, stream_from: int = 0) -> list[Message]:
        """The batch's messages, decoded, if the batch may reach the core; else raises
        :class:`PeerRejected` (counted in :attr:`rejected`, logged rate-limited). Refused:

        * another cluster's batch (etcd: 412 "cluster ID mismatch");
        * a sender that is not a member of the current configuration (removed ones
          included), or that is not the one this stream started with (``stream_from``);
        * a message whose ``from`` is not the batch's, whose ``to`` is not this member, of
          an unknown type or of a type only a member feeds itself (HUP, BEAT, CHECK_QUORUM,
          UNREACHABLE, SNAP_STATUS; etcd-raft's ``IsLocalMsg``, which its node drops when
          they come from the network) — proposals are accepted from members only, as a
          follower forwarding to its leader sends them;
        * a term above :data:`MAX_TERM` or an index/commit above :data:`MAX_INDEX`.

        Without peer TLS a member's id is only a number in the batch: someone who knows a
        member's id and the cluster id can still speak as that member (docs/hostile-input.md).
        """
        frm = getattr(batch, "from")
        try:
            local = self.cluster_id()
            if local and batch.cluster_id != local:
                raise PeerRejected("cluster ID mismatch")
            if frm == self.member_id or not self.is_member(frm):
                raise PeerRejected("not a member",
                                   f"sender {frm:x} is not a member of this cluster")
            if stream_from and frm != stream_from:
                raise PeerRejected("sender changed",
                                   f"sender changed from {stream_from:x} to {frm:x}")
            return [self._check_message(p, frm) for p in batch.messages]
        except PeerRejected as err:
            reason = err.kind
            self.rejected[reason] += 1
            now = time.monotonic()
            key = (reason, frm)
            if now - self._reject_logged.get(key, -REJECT_LOG_INTERVAL) >= REJECT_LOG_INTERVAL:
                if len(self._reject_logged) > 1024:
                    self._reject_logged.clear()
                self._reject_logged[key] = now
                log.warning("transport.peer_rejected", sender=f"{frm:x}", reason=str(err),
                            cluster_id=f"{batch.cluster_id:x}", total=self.rejected[reason])
            raise

    def _check_message(self, p: raft_pb2.RaftMessage, frm: int) -> Message:
        # Decode first: the checks then read Python ints, not protobuf fields (half the cost).
        try:
            m = message_from_pb(p)
        except ValueError:
            raise PeerRejected("bad type", f"unknown message or entry type in a {p.type} "
                               "message") from None
        if m.frm != frm:
            raise PeerRejected("bad from", "a message's from differs from the batch's")
        if m.to != self.member_id:
            raise PeerRejected("bad to", f"message to {m.to:x}, not to this member")
        if m.type in LOCAL_MESSAGES:
            raise PeerRejected("local type", f"local message type {m.type.name} from the network")
        if m.term > MAX_TERM or m.log_term > MAX_TERM:
            raise PeerRejected("bad term", f"term above {MAX_TERM}")
        if m.term > self.term_bound():
            raise PeerRejected("bad term", f"term {m.term} is above this member's bound "
                               f"{self.term_bound()} (its term + {MAX_TERM_STEP})")
        if m.index > MAX_INDEX or m.commit > MAX_INDEX or m.reject_hint > MAX_INDEX:
            raise PeerRejected("bad index", f"index above {MAX_INDEX}")
        for e in m.entries:
            if e.term > MAX_TERM or e.index > MAX_INDEX:
                raise PeerRejected("bad entry", "entry with an out-of-range term or index")
        snap = m.snapshot
        if snap is not None and (snap.metadata.term > MAX_TERM
                                 or snap.metadata.index > MAX_INDEX):
            raise PeerRejected("bad snapshot", "snapshot with an out-of-range term or index")
        return m

    def accept(self, batch: raft_pb2.MessageBatch, stream_from: int = 0) -> None:
        """Hand a received batch to the core (raises :class:`PeerRejected`, see
        :meth:`check`)."""
        frm = getattr(batch, "from")
        if self.faults.cut and self.name_of(frm) in self.faults.cut:
            return
        msgs = self.check(batch, stream_from)
        self.last_heard[frm] = time.monotonic()
        self.deliver(msgs)


Ctx = Context


class PeerService:
    """The peer-port gRPC service (:func:`peer_handlers` serves it)."""

    def __init__(self, transport: Transport,
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
        try:
            async for batch in request_iterator:
                try:
                    self.t.accept(batch, frm)
                except PeerRejected as err:
                    await context.abort(StatusCode.FAILED_PRECONDITION, str(err))
                frm = frm or getattr(batch, "from")
        except asyncio.CancelledError:
            # The sender's connection broke (its process died, or it closed the stream).
            if frm and not self.t.stopped:
                self.t.stream_lost(frm)
            raise
        return raft_pb2.SendResponse()

    async def SendSnapshot(self, request: raft_pb2.MessageBatch,
                           context: Ctx) -> raft_pb2.SendResponse:
        frm = getattr(request, "from")
        if self.t.faults.cut and self.t.name_of(frm) in self.t.faults.cut:
            await context.abort(StatusCode.UNAVAILABLE, "link cut")
        try:
            self.t.accept(request)
        except PeerRejected as err:
            await context.abort(StatusCode.FAILED_PRECONDITION, str(err))
        return raft_pb2.SendResponse()

    async def LeaseRenew(self, request: raft_pb2.LeaseRenewRequest,
                         context: Ctx) -> raft_pb2.LeaseRenewResponse:
        ttl, not_leader = await self._lease_renew(request.id)
        return raft_pb2.LeaseRenewResponse(ttl=ttl, not_leader=not_leader)

    async def LeaseTimeToLive(self, request: raft_pb2.LeaseTTLRequest,
                              context: Ctx) -> raft_pb2.LeaseTTLResponse:
        got = self._lease_ttl(request.id)
        if got is None:
            return raft_pb2.LeaseTTLResponse(not_leader=True)
        ttl, granted, keys = got
        return raft_pb2.LeaseTTLResponse(ttl=ttl, granted=granted, keys=keys)

    async def Join(self, request: raft_pb2.MemberJoinRequest,
                   context: Ctx) -> raft_pb2.MemberJoinResponse:
        member_id, cluster_id = self._join(request.peer)
        return raft_pb2.MemberJoinResponse(member_id=member_id, cluster_id=cluster_id,
                                           found=member_id != 0)

    async def Fault(self, request: raft_pb2.FaultRequest,
                    context: Ctx) -> raft_pb2.FaultResponse:
        f = self.t.faults
        if not f.enabled:
            await context.abort(StatusCode.PERMISSION_DENIED,
                                "fault injection is disabled (set RAFTCRON_FAULTS=1)")
        f.cut = set(request.cut)
        f.delay = request.delay_ms / 1000.0
        log.warning("transport.faults", cut=sorted(f.cut), delay_ms=request.delay_ms)
        return raft_pb2.FaultResponse(cut=sorted(f.cut), delay_ms=request.delay_ms)


def peer_handlers(service: PeerService) -> dict[str, MethodHandler]:
    """The peer port's method table (``/raftcronpb.Peer/Send`` ... → handler)."""
    return service_handlers(PEER_SERVICE, service)
