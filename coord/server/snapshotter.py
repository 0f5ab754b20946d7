"""Snapshots of a member's state: :class:`StateCapture` serialises the applier's state a
slice per loop turn (used by the member's Raft snapshots and by ``Maintenance.Snapshot``);
:class:`Snapshotting` writes a member's snapshot on its own thread, then compacts the
in-memory log and releases the WAL segments it covers (the decisions, as actions:
``coord.server.member_snap``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from coord.mvcc.store import SnapshotBuild, SnapshotReuse
from coord.raft import (
    ConfState,
    RaftError,
)
from coord.server.apply import Applier
from coord.server.member_snap import ReleaseWal, SnapshotPolicy, TakeSnapshot
from coord.server.member_state import (
    MemberState,
)
from coord.server.membership import encode_snapshot_data
from coord.server.snapfile import (
    snap_file_prefix,
)
from coord.storage import WAL

log = structlog.get_logger("coord.raftnode")

CATCH_UP_ENTRIES = 1000
"""Entries kept in memory behind a snapshot so that slightly lagging followers need none."""


class StateCapture:
    """The applier's state (leases and store) captured at one instant — the leases and
    the store's first piece in the calling loop turn — and serialised a slice per loop
    turn by :meth:`finish`, so that a large store never stalls the loop (heartbeats,
    client requests) for the whole build (0.2 to 1 s at 20,000 to 80,000 revisions)."""

    def __init__(self, applier: Applier, reuse: SnapshotReuse | None = None) -> None:
        self.lessor = applier.lessor.snapshot()
        self.auth = applier.auth_snapshot()
        self.build: SnapshotBuild = applier.store.snapshot_chunks(reuse=reuse)
        self._parts: list[bytes | memoryview] = [next(self.build)]

    async def finish(self, stopped: Callable[[], bool] = lambda: False,
                     ) -> tuple[list[bytes | memoryview], int] | None:
        """The pieces of ``Applier.snapshot()``'s bytes and the offset of the store's part
        among them (``Applier.pack_snapshot_parts``); None if ``stopped()`` turned true.
        Raises ValueError if the store was compacted or restored meanwhile."""
        parts = self._parts
        for piece in self.build:
            parts.append(piece)
            await asyncio.sleep(0)
            if stopped():
                return None
        self._parts = []
        return Applier.pack_snapshot_parts(parts, self.lessor, self.auth)


class Snapshotting(MemberState):
    def _snapshot_policy(self) -> SnapshotPolicy:
        """Snapshot every ``snapshot_count`` entries or ``snapshot_bytes``; keep up to
        ``CATCH_UP_ENTRIES`` (at most half of ``snapshot_count``) entries behind a
        snapshot, no more than ``snapshot_bytes / 2`` of them."""
        cfg = self.config
        return SnapshotPolicy(cfg.snapshot_count, cfg.snapshot_bytes,
                              min(CATCH_UP_ENTRIES, max(1, cfg.snapshot_count // 2)),
                              cfg.snapshot_bytes // 2)

    def _after_save(self, save: asyncio.Task[bool]) -> None:
        """A snapshot was saved: the entries applied while it was built and written may
        make the next one due already, and no further entry may come to ask. (Not after a
        failed save: a broken disk would be retried in a loop; the next entry asks.)"""
        if not save.cancelled() and save.exception() is None and save.result():
            self._snapshot_if_due()

    def _snapshot_if_due(self) -> None:
        """Snapshot every ``snapshot_count`` entries, or sooner once the entries applied
        since the last snapshot hold ``snapshot_bytes`` — or as many bytes as that snapshot
        had, if more: the log in memory stays about the size of the data, and a snapshot
        (which writes the whole store) is written at most once per its own size of new
        entries. Asked after every applied batch and after each saved snapshot."""
        if self._stopped or self._core is None:
            return
        take = self._core.snaps.due(self._applied, self._unsnapped_bytes)
        if take is not None:
            self._take_snapshot(take)

    def _take_snapshot(self, take: TakeSnapshot) -> None:
        """Start a snapshot of the state at the applied index. The store's part (its whole
        history since the last compaction, in proportion to its revisions) is serialised in
        slices between other work, so a large store never stalls the loop — heartbeats,
        client requests — for the whole build (docs/cluster.md has the figures).
        What the previous snapshot serialised and has not changed since (no compaction or
        restore in between) is copied from it: a build serialises only the revisions
        applied since, about ``snapshot_count`` of them, however long the history."""
        assert self.rn is not None
        if self._snap_build is not None or self._snap_saves:
            # One at a time: a build waits until the previous snapshot's file is written,
            # so a slow disk cannot pile up whole snapshots in memory (the save's end
            # and the next applied entry try again).
            return
        index = take.index
        self._snap_bytes_at = self._unsnapped_bytes
        cs = self.rn.status().conf_state
        # Everything of the state at ``index`` is captured in this loop turn: the membership
        # (the snapshot data's head), the leases, and the store (its first piece).
        head = encode_snapshot_data(self.membership, b"")
        capture = StateCapture(self.applier, self._snap_reuse)
        self._snap_build = asyncio.ensure_future(self._build_snapshot(index, cs, head, capture))

    async def _build_snapshot(self, index: int, cs: ConfState, head: bytes,
                              capture: StateCapture) -> None:
        try:
            built = await capture.finish(lambda: self._stopped)
        except ValueError as err:  # compacted or restored meanwhile: next time
            log.info("raftnode.snapshot_restarted", index=index, reason=str(err))
            return
        finally:
            self._snap_build = None
        if built is None:
            return
        pieces, store_at = built
        # The file's payload, in pieces written one after the other: the data is never
        # joined in memory (the store part alone is tens of MB for 100,000 keys).
        payload = [snap_file_prefix(cs), head, *pieces]
        del pieces
        reuse_at = len(payload[0]) + len(head) + store_at
        self._save_snapshot(index, cs, payload, capture.build.reuse, reuse_at)

    def _save_snapshot(self, index: int, cs: ConfState, payload: list[bytes | memoryview],
                       reuse: SnapshotReuse | None, reuse_at: int) -> None:
        assert self._wal is not None and self._core is not None
        try:
            term = self.storage.term(index)
        except RaftError as err:  # a snapshot from the leader replaced the log meanwhile
            log.warning("raftnode.snapshot_skipped", error=repr(err))
            return
        self._core.snaps.started(index)
        save = asyncio.ensure_future(self._persist_snapshot(
            index, term, cs, payload, (reuse, reuse_at), self._wal))
        self._snap_saves.add(save)
        save.add_done_callback(self._snap_saves.discard)
        save.add_done_callback(self._after_save)  # after the discard: one at a time

    async def _persist_snapshot(self, index: int, term: int, cs: ConfState,
                                payload: list[bytes | memoryview],
                                reuse: tuple[SnapshotReuse | None, int], wal: WAL) -> bool:
        """Write the snapshot file on its own thread — a WAL write does not wait behind it.
        Once it is durable: the core's storage takes the snapshot (its data stays in the
        file, :mod:`coord.server.snapfile`) and drops the log entries it covers, the next
        build reuses the file's bytes (mapped, not read), and on the WAL thread a new
        segment starts and the segments the snapshot covers go."""
        snaps = self._snaps
        loop = asyncio.get_running_loop()
        size = sum(len(p) for p in payload)

        watermark = self._watermark
        core = self._core
        assert core is not None

        def release(r: ReleaseWal) -> None:
            wal.cut()
            if watermark is not None:  # the new segment exists: deleting it is now seen
                watermark.mark(wal.durable_seq)
            if r.before:
                wal.release_before(r.before)
            snaps.purge(keep=2)

        try:
            path = await loop.run_in_executor(self._snap_io, snaps.save, index, term, payload)
            del payload
            try:
                self.storage.create_snapshot(index, cs, b"")
            except RaftError as err:  # a snapshot from the leader replaced it meanwhile
                core.snaps.abandoned(index)
                log.warning("raftnode.snapshot_skipped", error=repr(err))
                return False
            self.storage.keep_on_disk(index, path)
            # What this snapshot covers no longer counts; what was applied since does.
            self._unsnapped_bytes = max(0, self._unsnapped_bytes - self._snap_bytes_at)
            compact, rel = core.snaps.saved(index, size, self.storage)
            if compact is not None:
                self.storage.compact(compact.index)
            base, at = reuse
            if base is not None:
                self._snap_reuse = base.over(snaps.map_payload(path)[at:])
            log.info("raftnode.snapshot", index=index, bytes=size,
                     compacted_to=compact.index if compact else self.storage.first_index() - 1)
            assert self._writer is not None
            await self._writer.run(lambda: release(rel))
        except Exception as err:  # noqa: BLE001 - logged: the next snapshot tries again
            core.snaps.abandoned(index)
            log.error("raftnode.snapshot_failed", index=index, error=repr(err))
            return False
        return True


SNAPSHOT_ATTEMPTS = 3
"""Sliced builds of a Snapshot response tried before one built in a single loop turn (a
compaction or restore during a sliced build makes it start again)."""


async def state_snapshot(applier: Applier) -> list[bytes | memoryview]:
    """The bytes of ``applier.snapshot()`` as pieces, built between other work: the state is
    captured in one loop turn and the store's history serialised a slice at a time (as the
    Raft snapshot is), so a large store does not stall every other request for the whole
    build (0.2-1 s at 20,000-80,000 revisions)."""
    for _ in range(SNAPSHOT_ATTEMPTS):
        try:
            built = await StateCapture(applier).finish()
        except ValueError:  # compacted or restored meanwhile: the captured state is gone
            continue
        assert built is not None  # never stopped
        return built[0]
    return [applier.snapshot()]
