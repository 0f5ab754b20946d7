"""Performing a Ready's actions on the server: the part of a member (see
:class:`~coord.server.raft_node.RaftNode`) that carries out what
:class:`~coord.server.member_ready.MemberCore` lists for one Ready — the snapshot file and
the one WAL write per Ready through the WAL writer, the transport, the applier — and
reports the write back to the core once it is durable."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import structlog

from coord.raft import Snapshot
from coord.server.member_apply import Applying
from coord.server.member_ready import (
    Action,
    Apply,
    InstallSnapshot,
    Persist,
    ReadStates,
    Send,
    SoftState,
)
from coord.server.member_requests import Requests
from coord.server.membership import decode_snapshot_data, encode_snapshot_data
from coord.server.snapfile import encode_snap_file
from coord.storage import Record
from coord.storage.records import ready_records, record_seqs

log = structlog.get_logger("coord.raftnode")


@dataclasses.dataclass(slots=True)
class _Write:
    """One Ready's write in flight (see ``RaftNode._perform``)."""

    persist: Persist
    snap_path: Path | None
    records: list[Record]
    written: int | asyncio.Future[int] | None
    """The last record's sequence number, or the future of it (None: nothing written)."""
    reported: bool = False


class Performing(Requests, Applying):
    async def _perform(self, actions: list[Action]) -> None:
        """Perform one Ready's actions (``MemberCore.ready``) in order: the write runs on
        the WAL writer while the entries already durable here are applied; what must
        follow the write waits for it."""
        write: _Write | None = None
        for a in actions:
            if isinstance(a, SoftState):
                self._on_soft_state(a.leader, a.role)
            elif isinstance(a, Send) and not a.after_persist:
                self.transport.send(list(a.messages))
            elif isinstance(a, ReadStates):
                for rs in a.states:
                    self._read_done(rs.request_ctx, rs.index)
            elif isinstance(a, Persist):
                write = await self._write(a)
            elif isinstance(a, Apply) and a.during_write:
                self._apply(list(a.entries), time.monotonic())
            else:
                if write is not None:
                    await self._persisted(write)
                if isinstance(a, Send):
                    self.transport.send(list(a.messages))
                elif isinstance(a, InstallSnapshot):
                    assert write is not None and write.persist.snapshot is not None
                    self._install(write.persist.snapshot)
                elif isinstance(a, Apply):
                    self._apply(list(a.entries), time.monotonic())
        if write is not None:
            await self._persisted(write)

    async def _write(self, p: Persist) -> _Write:
        """Start ``p``'s write: the snapshot file (awaited), then one WAL write of the
        marker, entries and hard state (on the loop or the writer's thread)."""
        assert self._writer is not None
        snap = p.snapshot
        marker: tuple[int, int] | None = None
        snap_path: Path | None = None
        if snap is not None:
            if not snap.data:  # the bootstrap snapshot: store the initial membership too
                snap = Snapshot(snap.metadata, encode_snapshot_data(
                    self.membership, self.applier.snapshot()))
                p = dataclasses.replace(p, snapshot=snap)
            data = encode_snap_file(snap)
            md = snap.metadata
            snaps = self._snaps
            snap_path = await self._writer.run(lambda: snaps.save(md.index, md.term, data))
            del data
            marker = (md.index, md.term)
        records = ready_records(marker, list(p.entries), p.hard_state)
        written: int | asyncio.Future[int] | None = None
        if records:
            written = self._writer.write(records, p.must_sync,
                                         lone=not self._props and len(p.entries) <= 1)
        return _Write(p, snap_path, records, written)

    async def _persisted(self, w: _Write) -> None:
        """Wait for ``w`` (once) and report it to the core."""
        if w.reported:
            return
        w.reported = True
        assert self._core is not None
        p, written = w.persist, w.written
        if written is not None and not isinstance(written, int):
            written = await written
        if p.entries and written is not None:
            self._core.snaps.wrote(record_seqs(w.records, written))
        self._core.persisted(p)
        if p.snapshot is not None:
            assert w.snap_path is not None
            self.storage.keep_on_disk(p.snapshot.metadata.index, w.snap_path)
        if p.hard_state is not None:
            self._term = p.hard_state.term
            self._commit = p.hard_state.commit

    def _install(self, snap: Snapshot) -> None:
        self._restore(snap, time.monotonic())
        for info in self.membership.members.values():
            self.transport.set_peer(info.id, info.peer)
        self._snap_reuse = None  # the store was restored: nothing to reuse
        log.info("raftnode.snapshot_installed", index=snap.metadata.index)
        self._on_applied()

    def _restore(self, snap: Snapshot, now: float) -> None:
        assert self._core is not None
        if snap.data:
            membership, state = decode_snapshot_data(snap.data)
            self.applier.restore(state, now)
            membership.cluster_id = membership.cluster_id or self.cluster_id
            self.membership = membership
            self.cluster_id = membership.cluster_id
        self._applied = snap.metadata.index
        self._core.snaps.installed(snap.metadata.index, len(snap.data))
        self._unsnapped_bytes = 0
