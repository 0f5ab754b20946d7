"""Snapshot transfer between members, in chunks (``SendSnapshot``, a client stream).

A snapshot is the whole store (up to gigabytes); sent as one message, it made the peer
port accept 2 GiB messages, so one unfinished message could make a member buffer 1.5 GB
(issue 15). Now no peer message is larger than a chunk plus its envelope, and the peer
port's limit (``PEER_RECV_LIMIT``) is a few MiB:

* the sender streams the snapshot's data in chunks of ``chunk_size`` bytes; the first
  chunk carries the envelope (sender, cluster id, the SNAP message without its data and
  the data's total size), the last one the CRC-32 of the whole data;
* the receiver checks the envelope as it checks any peer batch (cluster, membership,
  terms) before it takes a byte of data, refuses a total size above ``max_snapshot``,
  appends chunks in order to a buffer that never grows past the declared size, verifies
  length and CRC, and only then hands the complete MsgSnap to the core;
* a transfer is bounded in time: each chunk must arrive within :data:`CHUNK_TIMEOUT`,
  the whole within :func:`transfer_deadline`. An interrupted, abandoned or refused
  transfer frees its buffer at once, and a new transfer from the same peer supersedes
  (frees) the one in progress, as etcd's snapshot sender does: one per peer at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from ssl import SSLContext
from typing import Any

import structlog

from coord.aiotools import within
from coord.pb import raft_pb2
from coord.raft import Message, MessageType, Snapshot
from coord.rpc.h2.client import StreamCall
from coord.server.transport_codec import message_to_pb
from coord.server.transport_h2 import (
    CONNECT_TIMEOUT,
    RESPONSE_LIMIT,
    SNAPSHOT_METHOD,
    write_drained,
)

log = structlog.get_logger("coord.transport")

SNAPSHOT_CHUNK = 1 << 20
"""Bytes of snapshot data per chunk (1 MiB)."""
MAX_SNAPSHOT = 8 << 30
"""The largest snapshot a member accepts (8 GiB: etcd's default backend quota is 2 GiB
and its largest recommended one 8 GiB)."""
CHUNK_TIMEOUT = 10.0
"""How long a receiver waits for the next chunk before it drops the transfer."""
ANSWER_TIMEOUT = 30.0
"""How long a sender waits for the receiver's answer once the last chunk is out (the
receiver verifies the data and hands it to the core)."""
MIN_RATE = 1 << 20
"""Bytes a second below which a transfer is given up (see :func:`transfer_deadline`)."""


class SnapshotRefused(Exception):
    """A snapshot transfer the receiver drops; ``str()`` says why (sent back to the sender)."""


def transfer_deadline(total: int) -> float:
    """Seconds a whole transfer of ``total`` bytes may take: 30 s plus one per MiB."""
    return 30.0 + total / MIN_RATE


def snapshot_chunks(m: Message, cluster_id: int, frm: int,
                    chunk_size: int) -> Iterator[raft_pb2.SnapshotChunk]:
    """The chunks of the SNAP message ``m`` (at least one, even for empty data)."""
    assert m.snapshot is not None
    data = m.snapshot.data
    envelope = message_to_pb(dataclasses.replace(
        m, snapshot=Snapshot(m.snapshot.metadata, b"")))
    total = len(data)
    offset = 0
    while True:
        end = min(total, offset + chunk_size)
        chunk = raft_pb2.SnapshotChunk(offset=offset, data=data[offset:end])
        if offset == 0:
            chunk.cluster_id = cluster_id
            setattr(chunk, "from", frm)
            chunk.message.CopyFrom(envelope)
            chunk.total_size = total
        if end >= total:
            chunk.last = True
            chunk.crc32 = zlib.crc32(data)
            yield chunk
            return
        yield chunk
        offset = end


async def send_snapshot_h2(address: str, chunks: Iterator[raft_pb2.SnapshotChunk],
                           total: int, ssl: SSLContext | None = None) -> None:
    """Stream ``chunks`` to ``address`` on coord's HTTP/2 client and wait for the answer.
    Raises a ConnectionError (:class:`coord.rpc.h2.client.StreamCallError`) on failure."""
    call = await StreamCall.open(address, SNAPSHOT_METHOD, connect_timeout=CONNECT_TIMEOUT,
                                 max_response=RESPONSE_LIMIT, ssl=ssl)
    try:
        async with asyncio.timeout(transfer_deadline(total)):
            for chunk in chunks:
                await write_drained(call, chunk)
            await within(call.finish(), ANSWER_TIMEOUT)
    except TimeoutError:
        raise ConnectionError(f"snapshot transfer to {address} timed out") from None
    finally:
        call.close()


@dataclasses.dataclass(eq=False)
class _Transfer:
    frm: int
    total: int
    buf: bytearray = dataclasses.field(default_factory=bytearray)
    superseded: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


class SnapshotReceiver:
    """The receiving side: at most one transfer per sending member, each bounded in
    size and time. ``check`` is the transport's batch check (raises ``PeerRejected``)."""

    def __init__(self, check: Callable[..., list[Message]], *,
                 max_snapshot: int = MAX_SNAPSHOT) -> None:
        self.check = check
        self.max_snapshot = max_snapshot
        self.active: dict[int, _Transfer] = {}
        """The transfer in progress from each member."""

    @property
    def buffered(self) -> int:
        """Bytes of snapshot data held by transfers in progress."""
        return sum(len(t.buf) for t in self.active.values())

    async def receive(self, chunks: AsyncIterator[raft_pb2.SnapshotChunk],
                      auth: Any = None) -> Message:
        """Read one transfer from ``chunks`` (on a connection whose certificate is
        ``auth``, for the check): the complete, verified SNAP message. Raises
        :class:`SnapshotRefused` (or the check's ``PeerRejected``) for a transfer that is
        refused, cut short or too slow; its buffer is freed either way."""
        it = aiter(chunks)
        first = await self._next(it, CHUNK_TIMEOUT)
        if first is None:
            raise SnapshotRefused("empty snapshot stream")
        frm = getattr(first, "from")
        batch = raft_pb2.MessageBatch(cluster_id=first.cluster_id, messages=[first.message])
        setattr(batch, "from", frm)
        m = self.check(batch, 0, auth)[0]
        if m.type != MessageType.SNAP or m.snapshot is None:
            raise SnapshotRefused(f"a {m.type.name} message on the snapshot stream")
        if first.total_size > self.max_snapshot:
            raise SnapshotRefused(f"snapshot of {first.total_size} bytes is over this "
                                  f"member's limit ({self.max_snapshot})")
        transfer = _Transfer(frm, first.total_size)
        old = self.active.get(frm)
        if old is not None:  # dropped at once, not when its next chunk arrives
            old.superseded.set()
            old.buf = bytearray()
            log.info("transport.snapshot_superseded", sender=f"{frm:x}")
        self.active[frm] = transfer
        try:
            data, crc = await self._collect(transfer, first, it)
        finally:
            if self.active.get(frm) is transfer:
                del self.active[frm]
            transfer.buf = bytearray()
        if zlib.crc32(data) != crc:
            raise SnapshotRefused("snapshot data fails its CRC-32")
        return dataclasses.replace(m, snapshot=Snapshot(m.snapshot.metadata, data))

    async def _collect(self, transfer: _Transfer, chunk: raft_pb2.SnapshotChunk,
                       it: AsyncIterator[raft_pb2.SnapshotChunk]) -> tuple[bytes, int]:
        deadline = time.monotonic() + transfer_deadline(transfer.total)
        while True:
            buf = transfer.buf
            if chunk.offset != len(buf):
                raise SnapshotRefused(f"chunk at offset {chunk.offset}, expected {len(buf)}")
            if len(buf) + len(chunk.data) > transfer.total:
                raise SnapshotRefused(f"more data than the declared {transfer.total} bytes")
            buf += chunk.data
            if chunk.last:
                if len(buf) != transfer.total:
                    raise SnapshotRefused(f"snapshot ends at {len(buf)} bytes of a declared "
                                          f"{transfer.total}")
                return bytes(buf), chunk.crc32
            left = deadline - time.monotonic()
            if left <= 0:
                raise SnapshotRefused("snapshot transfer too slow")
            nxt = await self._next(it, min(CHUNK_TIMEOUT, left), transfer.superseded)
            if nxt is None:
                raise SnapshotRefused("snapshot stream ended before its last chunk")
            chunk = nxt

    @staticmethod
    async def _next(it: AsyncIterator[raft_pb2.SnapshotChunk], timeout: float,
                    superseded: asyncio.Event | None = None) -> raft_pb2.SnapshotChunk | None:
        """The next chunk; None at the end of the stream. Raises SnapshotRefused when none
        comes within ``timeout`` or the transfer is superseded meanwhile."""
        if superseded is None:
            superseded = asyncio.Event()
        chunk = asyncio.ensure_future(anext(it))
        dropped = asyncio.ensure_future(superseded.wait())
        try:
            await asyncio.wait((chunk, dropped), timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            dropped.cancel()
            arrived = chunk.done()
            if not arrived:
                chunk.cancel()
        if superseded.is_set():
            raise SnapshotRefused("superseded by a newer transfer from the same member")
        if not arrived:
            raise SnapshotRefused(f"no snapshot chunk for {timeout:g} s")
        try:
            return chunk.result()
        except StopAsyncIteration:
            return None
