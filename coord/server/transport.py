"""Peer transport: Raft messages between members over gRPC on ``--listen-peer``.

* One sender task per peer with its own bounded queue: messages are batched (everything
  queued when the stream is ready goes in one ``MessageBatch``) and written on a long-lived
  client stream. A slow or dead peer fills only its own queue; when it is full, messages
  to that peer are dropped and the core is told (``report_unreachable``), exactly as if the
  network had lost them — Raft retransmits.
* A broken stream is reopened with exponential backoff (50 ms .. 1 s).
* Batches are bounded in bytes too (:data:`BATCH_BYTES`; a forwarded proposal larger than
  that is split), so that every peer message fits :data:`PEER_RECV_LIMIT`, a few MiB.
* Snapshots (``SNAP`` messages) go in chunks on a ``SendSnapshot`` stream of their own
  (:mod:`coord.server.transport_snapshot`), so the sender learns the outcome and reports
  it (``report_snapshot``), and no peer message is larger than a chunk.
* Everything goes over coord's own HTTP/2 client (``coord.rpc.h2.client``): a member
  never imports grpcio (docs/grpc-server.md).
* Fault injection is a test hook (:class:`LinkHook`, installed by tests through
  :data:`link_hook_factory`): with one, the peer service's ``Fault`` RPC cuts links to
  named members or delays outgoing batches. Without (in production), ``Fault`` answers
  PERMISSION_DENIED; it is never on the client port.

The codec between ``coord.raft`` dataclasses and ``raft.proto`` is
:mod:`coord.server.transport_codec`; the HTTP/2 client calls are in
:mod:`coord.server.transport_h2`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
from collections.abc import Callable
from ssl import SSLContext
from typing import Any

import structlog

from coord.pb import raft_pb2
from coord.raft import Entry, Message, MessageType
from coord.rpc.h2.client import StreamCall
from coord.rpc.h2.tls import AuthContext
from coord.server.transport_codec import message_to_pb, wire_size
from coord.server.transport_dial import DialLog
from coord.server.transport_h2 import (
    CONNECT_TIMEOUT,
    SEND_METHOD,
    H2PeerStub,
    H2Send,
    rpc_failed,
)
from coord.server.transport_identity import PeerIdentity
from coord.server.transport_intake import (
    MAX_INDEX,
    MAX_TERM,
    MAX_TERM_STEP,
    REJECT_LOG_INTERVAL,
    PeerRejected,
    check_message,
)
from coord.server.transport_service import LinkHook, PeerService, peer_handlers
from coord.server.transport_snapshot import (
    SNAPSHOT_CHUNK,
    SnapshotReceiver,
    send_snapshot_h2,
    snapshot_chunks,
)

__all__ = [  # what other modules import from here, some of it defined in the helpers
    "MAX_INDEX", "MAX_TERM", "MAX_TERM_STEP", "PEER_RECV_LIMIT",
    "H2PeerStub", "LinkHook", "PeerIdentity", "PeerRejected", "PeerService", "Transport",
    "message_to_pb", "peer_handlers",
]

log = structlog.get_logger("coord.transport")

QUEUE_LIMIT = 4096
"""Messages queued per peer before new ones are dropped (and the peer reported unreachable)."""
BATCH_LIMIT = 512
"""Messages per MessageBatch."""
BATCH_BYTES = 1 << 20
"""Bytes of messages per MessageBatch (a batch holds at least one message)."""
PEER_RECV_LIMIT = 4 << 20
"""The largest message the peer port accepts (4 MiB; it was 2^31-1 while a snapshot
travelled as one message, and one unfinished message could make a member buffer 1.5 GB).
What members send fits: a snapshot chunk (1 MiB) with its envelope; a batch of at most
:data:`BATCH_BYTES` or one message, an APP being at most ``max_size_per_msg`` (1 MiB) or
one entry (a request of at most 1.5 MiB), and a forwarded proposal split to fit."""
MESSAGE_LIMIT = PEER_RECV_LIMIT - (64 << 10)
"""The largest single message a sender puts in a batch (the batch's own fields aside); a
larger one is dropped and logged (Raft treats it as lost), never sent to be refused."""


link_hook_factory: Callable[[Transport], LinkHook] | None = None
"""Set by tests (never in production): every Transport made afterwards gets a hook."""


def split_oversized(m: Message) -> list[Message]:
    """``m``, or a proposal too large for one batch as several proposals (each entry
    stays whole; the leader appends them in order)."""
    if m.type != MessageType.PROP or len(m.entries) < 2 or wire_size(m) <= BATCH_BYTES:
        return [m]
    parts: list[Message] = []
    group: list[Entry] = []
    size = 0
    for e in m.entries:
        n = 32 + len(e.data)
        if group and size + n > BATCH_BYTES:
            parts.append(dataclasses.replace(m, entries=tuple(group)))
            group, size = [], 0
        group.append(e)
        size += n
    parts.append(dataclasses.replace(m, entries=tuple(group)))
    return parts


# ---------------------------------------------------------------------- sender
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
            for old in list(self.snap_tasks):  # a newer snapshot supersedes one in flight
                old.cancel()
            task = asyncio.get_running_loop().create_task(self._send_snapshot(m))
            self.snap_tasks.add(task)
            task.add_done_callback(self.snap_tasks.discard)
            return
        if len(self.queue) >= QUEUE_LIMIT:
            self.t.report_unreachable(self.peer_id)
            return
        self.queue.extend(split_oversized(m))
        self.wake.set()

    def _stub(self) -> H2PeerStub:
        if self.stub is None:
            self.stub = H2PeerStub(self.address, self.t.peer_ssl)
        return self.stub

    async def _send_snapshot(self, m: Message) -> None:
        ok = False
        try:
            hook = self.t.hook
            if hook is not None and hook.cut(self.peer_id):
                raise ConnectionError("link cut by fault injection")
            assert m.snapshot is not None
            total = len(m.snapshot.data)
            chunks = snapshot_chunks(m, self.t.cluster_id(), self.t.member_id,
                                     self.t.snapshot_chunk)
            await send_snapshot_h2(self.address, chunks, total, self.t.peer_ssl)
            ok = True
            log.info("transport.snapshot_sent", to=f"{self.peer_id:x}",
                     index=m.snapshot.metadata.index, bytes=total)
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
                hook = self.t.hook
                if hook is not None:
                    await hook.before_send()
                    if hook.cut(self.peer_id):
                        self.queue.clear()
                        continue
                batch = self._batch(self._take())
                if not batch.messages:
                    continue
                try:
                    if call is None:
                        call = await self._open_send()
                        self.t.dial_log.reached(self.peer_id)
                    await call.write(batch)
                    backoff = 0.05
                except Exception as err:  # noqa: BLE001 - the sender must outlive any failure
                    expected = rpc_failed(err) or isinstance(
                        err, (asyncio.InvalidStateError, OSError))
                    (log.debug if expected else log.warning)(
                        "transport.send_failed", to=f"{self.peer_id:x}", error=repr(err))
                    self.t.dial_log.failed(self.peer_id, self.address, err)
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

    def _take(self) -> list[Message]:
        """The next batch's messages: up to BATCH_LIMIT of them and BATCH_BYTES (at least
        one). A message too large for the peer port (a bug: APPs and proposals are bounded)
        is dropped and logged as a lost message."""
        msgs: list[Message] = []
        size = 0
        queue = self.queue
        while queue and len(msgs) < BATCH_LIMIT:
            n = wire_size(queue[0])
            if n > MESSAGE_LIMIT:
                m = queue.popleft()
                log.error("transport.message_too_large", to=f"{self.peer_id:x}",
                          type=m.type.name, bytes=n, limit=MESSAGE_LIMIT)
                continue
            if msgs and size + n > BATCH_BYTES:
                break
            msgs.append(queue.popleft())
            size += n
        return msgs

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
        return H2Send(await StreamCall.open(self.address, SEND_METHOD,
                                             connect_timeout=CONNECT_TIMEOUT,
                                             ssl=self.t.peer_ssl))

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
        """Called with a peer's id when the stream it was sending us messages on breaks."""
        self.last_heard: dict[int, float] = {}
        """When a batch from each peer last arrived (monotonic seconds)."""
        self.snapshot_chunk = SNAPSHOT_CHUNK
        """Bytes of snapshot data per chunk this member sends."""
        self.snapshots = SnapshotReceiver(self.check)
        """Snapshot transfers being received (one per sending member at most)."""
        self.peer_ssl: SSLContext | None = None
        """How this member dials its peers: TLS with its ``--peer-`` certificate (set by
        the composition root, ``coord.server.server``, and again by a reload:
        :meth:`set_peer_ssl`), None: plaintext."""
        self.dial_log = DialLog()
        """TLS failures of the dials to peers, warned about at most once a minute each."""
        self.identity: PeerIdentity | None = None
        """With peer TLS and a CA: the check that a connection's certificate is the member
        it speaks for (:mod:`coord.server.transport_identity`); None: not checked."""
        self.hook: LinkHook | None = None
        """Fault injection (tests only)."""
        if link_hook_factory is not None:
            self.hook = link_hook_factory(self)
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

    def set_peer_ssl(self, ctx: SSLContext) -> None:
        """Dial peers with ``ctx`` from now on (reloaded certificate files); streams open
        now go on with the certificate they were made with."""
        self.peer_ssl = ctx
        for sender in self._peers.values():
            sender.stub = None

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

    def check(self, batch: raft_pb2.MessageBatch, stream_from: int = 0,
              auth: AuthContext | None = None) -> list[Message]:
        """The batch's messages, decoded, if the batch may reach the core; else raises
        :class:`PeerRejected` (counted in :attr:`rejected`, logged rate-limited). Refused:

        * another cluster's batch (etcd: 412 "cluster ID mismatch");
        * a sender that is not a member of the current configuration (removed ones
          included), or that is not the one this stream started with (``stream_from``);
        * with :attr:`identity`, a stream's first batch (or a snapshot's envelope) from a
          connection whose certificate (``auth``) is not the sender's;
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
            if self.identity is not None and not stream_from:
                self.identity.verify(frm, auth or {})
            bound = self.term_bound()
            return [check_message(p, frm, self.member_id, bound) for p in batch.messages]
        except PeerRejected as err:
            self._refused(err, frm, batch.cluster_id)
            raise

    def check_call(self, method: str, auth: AuthContext, member_id: int = 0) -> None:
        """With :attr:`identity`, raises :class:`PeerRejected` (counted and logged as a
        refused batch) unless the certificate of the peer call ``method`` is member
        ``member_id``'s (0: any current member's)."""
        if self.identity is None:
            return
        try:
            if member_id:
                self.identity.verify(member_id, auth)
            else:
                self.identity.verify_any(auth)
        except PeerRejected as err:
            self._refused(err, member_id, self.cluster_id(), method)
            raise

    def _refused(self, err: PeerRejected, frm: int, cluster_id: int, call: str = "Send") -> None:
        """Count a refusal and log it (at most once per interval per reason and sender)."""
        reason = err.kind
        self.rejected[reason] += 1
        now = time.monotonic()
        key = (reason, frm)
        if now - self._reject_logged.get(key, -REJECT_LOG_INTERVAL) >= REJECT_LOG_INTERVAL:
            if len(self._reject_logged) > 1024:
                self._reject_logged.clear()
            self._reject_logged[key] = now
            log.warning("transport.peer_rejected", sender=f"{frm:x}", reason=str(err),
                        kind=reason, call=call, cluster_id=f"{cluster_id:x}",
                        total=self.rejected[reason])

    def accept(self, batch: raft_pb2.MessageBatch, stream_from: int = 0,
               auth: AuthContext | None = None) -> None:
        """Hand a received batch to the core (raises :class:`PeerRejected`, see
        :meth:`check`)."""
        frm = getattr(batch, "from")
        if self.hook is not None and self.hook.cut(frm):
            return
        self.hand_over(frm, self.check(batch, stream_from, auth))

    def hand_over(self, frm: int, msgs: list[Message]) -> None:
        """Deliver checked messages from member ``frm`` to the core."""
        self.last_heard[frm] = time.monotonic()
        self.deliver(msgs)
