"""The single-member node: propose → log → apply, with one fsync per batch.

Every state change is an :class:`InternalRequest`. ``propose`` queues it; one writer task
takes everything queued, appends it to the WAL and makes it durable with one fsync (group
commit, on the storage thread), then applies the batch in log order on the event loop and
answers each caller. A caller is answered only after its record is durable *and* applied,
so a read served from the applied state sees every acknowledged write (linearizable on a
single member without a read barrier).

In a cluster the Raft log takes the WAL's place (see ``coord/server/raft_node.py`` when it
lands): the proposal path, the applier and the answers stay the same.

Restart: load the newest valid snapshot, restore the state machine from it, then replay
the WAL records after it. Every ``snapshot_count`` applied records a snapshot is saved
(atomically) and the WAL segments it covers are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from google.protobuf.message import Message

from coord.api.proto import internal_pb2, rpc_pb2
from coord.errors import CoordError, Stopped
from coord.server.config import ServerConfig
from coord.storage import ENTRY, SNAPSHOT_MARKER, WAL, GroupCommitter, Record, SnapshotStore

log = structlog.get_logger("coord.node")


class StateMachine(Protocol):
    """What the node needs from the applier (``coord.server.apply.Applier``)."""

    def apply(self, req: internal_pb2.InternalRequest, now: float) -> Message | None: ...
    def snapshot(self) -> bytes: ...
    def restore(self, data: bytes, now: float = 0.0) -> None: ...


_Pending = tuple[internal_pb2.InternalRequest, bytes, "asyncio.Future[Message | None]"]


class LocalNode:
    """A one-member coord node. Always the leader of term 1 while running."""

    term = 1

    def __init__(self, config: ServerConfig, state: StateMachine,
                 on_applied: Callable[[], None] | None = None) -> None:
        self.config = config
        self.state = state
        self.member_id = config.member_id
        self.cluster_id = config.cluster_id
        self._on_applied = on_applied or (lambda: None)
        self._ids = itertools.count(1)
        self._queue: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self._wal: WAL | None = None
        self._committer: GroupCommitter | None = None
        self._snaps = SnapshotStore(config.data_dir / "snap")
        self.applied_index = 0
        self._since_snapshot = 0
        self._stopped = False

    @property
    def leader_id(self) -> int:
        return self.member_id

    @property
    def is_leader(self) -> bool:
        return True

    @property
    def committed_index(self) -> int:
        return self.applied_index

    # ------------------------------------------------------------------ lifecycle
    def recover(self) -> None:
        """Rebuild the state from the newest snapshot and the WAL (synchronous, at boot)."""
        snap = self._snaps.load_newest()
        base = 0
        if snap is not None:
            self.state.restore(snap.data, time.monotonic())
            base = snap.index
        wal, records = WAL.open(self.config.data_dir / "wal")
        self._wal = wal
        seq = wal.first_seq
        now = time.monotonic()
        replayed = 0
        for rec in records:
            if rec.type == ENTRY and seq > base:
                req = internal_pb2.InternalRequest.FromString(rec.data)
                # A request that failed when first applied fails the same way again and
                # changes nothing.
                with contextlib.suppress(CoordError):
                    self.state.apply(req, now)
                replayed += 1
            seq += 1
        self.applied_index = max(base, wal.last_seq)
        self._since_snapshot = replayed
        self._committer = GroupCommitter.for_wal(wal)
        log.info("node.recovered", snapshot_index=base, replayed=replayed,
                 applied_index=self.applied_index)

    async def stop(self) -> None:
        self._stopped = True
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._committer is not None:
            await self._committer.close()
        if self._wal is not None:
            self._wal.close()
        for _, _, fut in self._queue:
            if not fut.done():
                fut.set_exception(Stopped())
        self._queue.clear()

    async def read_index(self) -> None:
        """Linearizable-read barrier: a no-op here, since callers are answered only after
        their write is applied (see the module docstring)."""
        if self._stopped:
            raise Stopped()

    # ------------------------------------------------------------------ proposals
    async def propose(self, req: internal_pb2.InternalRequest) -> Any:
        """Make ``req`` durable and apply it; return the applier's response.

        Raises the applier's :class:`CoordError` (nothing changed) or :class:`Stopped`.
        """
        if self._stopped:
            raise Stopped()
        req.id = next(self._ids)
        fut: asyncio.Future[Message | None] = asyncio.get_running_loop().create_future()
        self._queue.append((req, req.SerializeToString(), fut))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        return await fut

    async def _write_loop(self) -> None:
        assert self._committer is not None
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    last = await self._committer.commit([Record(ENTRY, b) for _, b, _ in batch])
                except Exception as exc:  # noqa: BLE001 - every waiter learns the outcome
                    log.error("node.wal_failed", error=repr(exc))
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(Stopped("etcdserver: request timed out"))
                    self._stopped = True
                    return
                now = time.monotonic()
                for req, _, fut in batch:
                    try:
                        resp = self.state.apply(req, now)
                    except CoordError as err:
                        if not fut.done():
                            fut.set_exception(err)
                        continue
                    if not fut.done():
                        fut.set_result(resp)
                self.applied_index = last
                self._since_snapshot += len(batch)
                self._on_applied()
                if self._since_snapshot >= self.config.snapshot_count:
                    await self._snapshot()
        finally:
            self._writer = None

    async def _snapshot(self) -> None:
        """Save a snapshot at the applied index and drop the WAL segments it covers."""
        assert self._wal is not None and self._committer is not None
        index = self.applied_index
        data = self.state.snapshot()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._snaps.save, index, self.term, data)
        marker = await self._committer.commit(
            [Record(SNAPSHOT_MARKER, index.to_bytes(8, "big"))])
        wal = self._wal

        def release() -> None:
            wal.cut()
            wal.release_before(marker)
            self._snaps.purge(keep=2)
        await loop.run_in_executor(None, release)
        # The marker consumed a sequence number: applied_index tracks WAL seq.
        self.applied_index = marker
        self._since_snapshot = 0
        log.info("node.snapshot", index=index)


def read_only_txn(req: rpc_pb2.TxnRequest) -> bool:
    """True when no branch of the txn (nested ones included) can write."""
    for op in (*req.success, *req.failure):
        which = op.WhichOneof("request")
        if which in ("request_put", "request_delete_range"):
            return False
        if which == "request_txn" and not read_only_txn(op.request_txn):
            return False
    return True
