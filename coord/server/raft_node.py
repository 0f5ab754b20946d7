"""RaftNode: a coord member driven by the Raft core (``coord.raft``), for 1, 3 or 5 members.

The Ready loop (one task; the core is only touched from the event loop) asks
``member_ready.MemberCore`` for each Ready as a list of actions and performs them
(``member_perform``), which comes to:

1. take ``ready()``; send ``messages`` at once (the leader's appends may leave before its
   own fsync);
2. persist the snapshot (atomic file, then a marker record), the entries and the hard state
   to the WAL — one write and at most one fsync per Ready, on the storage thread — and
   mirror them into the ``MemoryStorage`` the core reads;
3. send ``messages_after_persist`` (votes, append acknowledgements);
4. apply the snapshot (applier + membership) and the committed entries in order; a waiter
   (the caller of ``propose`` on this member) is answered with the applier's response when
   its entry is applied here; conf changes go through ``apply_conf_change`` and the
   membership table; ``read_states`` answer ReadIndex waiters;
5. ``advance``; every ``snapshot_count`` applied entries, save a snapshot, compact the
   in-memory log (keeping ``CATCH_UP_ENTRIES`` for slow followers) and release WAL segments.

Entry data: ``b"R" + InternalRequest`` (a client request; ``id`` matches the waiter),
``b"A" + json`` (a member publishing its name and client URLs); empty = the leader's no-op.

Proposals on a follower are forwarded to the leader by the core (PROP). A waiter is only
answered once its entry is applied, so a stale leader never acknowledges a write it did not
commit; on a leader change pending waiters get ``leader changed`` (outcome unknown), after
``REQUEST_TIMEOUT`` they get ``request timed out``.

Parts: this module is the shell that performs I/O (the Ready loop, timers, recovery);
the Ready handling without I/O (each Ready as ordered actions, the log mirror, the
durable index) is ``member_ready.MemberCore``, performed here by ``member_perform``
(WAL and snapshot writes, the transport, the applier) and by the simulator
(``tests/sim``) over its simulated disk and network; the member's other decisions are
the core's too, and the simulator runs them: its timers (the early campaign, one timer
armed at ``MemberCore.next_wake``), when to snapshot, how far to compact and which WAL
segments to release (``member_snap``, performed by ``snapshotter``), who to answer or
fail (``member_waiters``), and what a restart starts from (``member_ready.recover``);
the WAL
records and their one writer in ``coord.storage.records`` and ``wal_writer``; clients'
waiters in ``member_requests``, applying in ``member_apply``, snapshots in
``snapshotter``, lease forwarding and membership in ``member_cluster``.

Restart: load the newest snapshot, replay the WAL's entries after it (an entry at index i
replaces every earlier-written entry ≥ i) and its latest hard state into a fresh
``MemoryStorage``; the core then re-delivers the committed entries past the snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from coord.errors import (
    Stopped,
)
from coord.mvcc.store import SnapshotReuse
from coord.raft import (
    Config,
    RaftError,
    RawNode,
    Snapshot,
    StateRole,
)
from coord.server.apply import Applier
from coord.server.config import ServerConfig, member_id_for
from coord.server.member_cluster import ClusterOps
from coord.server.member_core import EarlyCampaign, ReadBatcher
from coord.server.member_perform import Performing
from coord.server.member_ready import LeaderLost, LogGap, MemberCore
from coord.server.member_ready import recover as member_recover
from coord.server.member_state import REQUEST_TIMEOUT, TAG_ATTRS, TAG_REQUEST
from coord.server.member_waiters import Waiters
from coord.server.membership import Membership
from coord.server.recovery import finish, gap_error, open_data_dir, os_problem, writable_check
from coord.server.snapfile import (
    FileBackedStorage,
    decode_snap_file,
)
from coord.server.snapshotter import Snapshotting
from coord.server.transport import MAX_TERM, MAX_TERM_STEP, Transport
from coord.storage import WAL, SnapshotStore, Watermark
from coord.storage.records import metadata_record, replay
from coord.storage.wal_writer import WalWriter

__all__ = ["READY_FAILED_HINT", "REQUEST_TIMEOUT", "TAG_ATTRS", "TAG_REQUEST", "RaftNode",
           "read_snap_file"]

log = structlog.get_logger("coord.raftnode")

MARK_INTERVAL = 1.0
"""Seconds between updates of the durable watermark while records are written."""


# ---------------------------------------------------------------------- snapshots on disk
def read_snap_file(path: Path) -> Snapshot:
    """A member's snapshot file, verified and decoded."""
    f = SnapshotStore.load(path)
    return decode_snap_file(f.index, f.term, f.data)


def _not_done(fut: asyncio.Future[Any]) -> bool:
    return not fut.done()


READY_FAILED_HINT = (
    "the member stopped so as not to vote or serve on state it could not persist or apply; "
    "fix the cause (disk full, permissions) and restart it. If it stops again at the same "
    "entries, the data dir cannot be recovered: remove the member (etcdctl member remove), "
    "move its data dir away and add it back (etcdctl member add) so it copies the state from "
    "the leader.")


class RaftNode(Performing, Snapshotting, ClusterOps):
    """A Raft cluster member (implements ``coord.server.core.Node``)."""

    def __init__(self, config: ServerConfig, applier: Applier,
                 on_applied: Callable[[], None] | None = None, *, join: bool = False) -> None:
        self.config = config
        self.applier = applier
        self.member_id = config.member_id
        self.cluster_id = config.cluster_id
        self.join = join
        self._on_applied = on_applied or (lambda: None)
        self.membership = Membership.bootstrap(config.cluster_id, config.initial_cluster,
                                               config.member_ids)
        self.storage = FileBackedStorage(read_snap_file)
        self.rn: RawNode | None = None
        self._core: MemberCore | None = None
        """The Ready handling over ``rn`` (set by ``recover``)."""
        self._early = EarlyCampaign(lambda: self.rn, config.tick_ms / 1000, random.Random(),
                                    lambda: not self._stopped and not self.removed)
        self.transport = Transport(
            self.member_id, cluster_id=lambda: self.cluster_id, deliver=self._deliver,
            report_unreachable=self._report_unreachable, report_snapshot=self._report_snapshot,
            name_of=self.membership_name, stream_lost=self._leader_stream_lost,
            is_member=self._is_member, term_bound=self._term_bound)
        self._snap_io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snap")
        """Writes snapshot files, so that a large one does not hold up WAL writes."""
        self._snap_build: asyncio.Future[None] | None = None
        """The snapshot being built (at most one; see ``_take_snapshot``)."""
        self._snap_reuse: SnapshotReuse | None = None  # the last snapshot's, for the next
        self._snap_saves: set[asyncio.Task[bool]] = set()
        self._wal: WAL | None = None
        self._writer: WalWriter | None = None
        """The one writer of ``_wal`` (where each write runs: on the loop or its thread)."""
        writable_check(config.data_dir)
        try:
            self._snaps = SnapshotStore(config.data_dir / "snap")
        except OSError as err:
            raise os_problem(config.data_dir, err) from err
        self._watermark: Watermark | None = None
        self._marking: asyncio.Future[bool] | None = None
        self._marked_at = 0.0
        self._kick = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        """The member's next timer (``_arm_timer``)."""
        self._timer_due = 0.0
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped = False
        self.removed = False
        prefix = (self.member_id & 0xFFFF) << 48 | random.SystemRandom().getrandbits(16) << 32
        self._ids = itertools.count(prefix + 1)
        self._wait: Waiters[asyncio.Future[Any]] = Waiters(REQUEST_TIMEOUT, _not_done)
        self._props: list[tuple[int, bytes]] = []
        self._conf_waiters: dict[int, asyncio.Future[Any]] = {}
        self._reads: ReadBatcher[asyncio.Future[int]] = self._read_batcher()
        self._leader_waiters: list[asyncio.Future[None]] = []
        self._applied = 0
        self._unsnapped_bytes = 0
        """Bytes of the entries applied since the last durable snapshot."""
        self._snap_bytes_at = 0
        """``_unsnapped_bytes`` when the snapshot being built or saved was started: the
        count drops by that much only once that snapshot is durable (a build abandoned, or
        a save that fails, leaves the trigger armed)."""
        self._term = 0
        self._leader = 0
        self._leaderless_since = time.monotonic()
        """When this member last lost its leader (see _term_bound)."""
        self._role = StateRole.FOLLOWER
        self._commit = 0

    # ------------------------------------------------------------------ Node protocol
    @property
    def term(self) -> int:
        return self._term

    @property
    def leader_id(self) -> int:
        return self._leader

    @property
    def applied_index(self) -> int:
        return self._applied

    @property
    def committed_index(self) -> int:
        return self._commit

    def log_disk_bytes(self) -> int:
        """Bytes of WAL records on disk (0 before recovery)."""
        return self._wal.disk_bytes if self._wal is not None else 0

    def membership_name(self, member_id: int) -> str:
        return self.membership.name_of(member_id)

    def members(self) -> Membership:
        return self.membership

    # ------------------------------------------------------------------ lifecycle
    def recover(self) -> None:
        """Rebuild storage, state machine and core from the snapshot + WAL (at boot)."""
        cfg = self.config
        opened = open_data_dir(cfg.data_dir, self._snaps)
        snap_file, wal, records = opened.snapshot, opened.wal, opened.records
        self._wal = wal
        self._writer = WalWriter(wal, inline_sync=cfg.inline_sync)
        self._watermark = opened.watermark
        replayed = replay(records, wal.first_seq)
        hs, meta = replayed.hard_state, replayed.metadata
        snap: Snapshot | None = None
        if snap_file is not None:
            snap = decode_snap_file(snap_file.index, snap_file.term, snap_file.data)
        try:
            rec = member_recover(self.storage, snap, replayed.entries, hs)
        except LogGap as gap:
            raise gap_error(cfg.data_dir, opened, gap.base, gap.first) from None
        base, entries, hs = rec.applied, rec.entries, rec.hard_state
        if rec.stale:
            log.warning("raftnode.stale_entries_dropped", count=rec.stale, snapshot_index=base,
                        reason="written before the snapshot from the leader replaced the log")
        if opened.broken and snap is not None:
            log.warning("raftnode.older_snapshot_used", index=base,
                        broken=[p.name for p, _ in opened.broken])
        finish(opened, self._snaps)
        if meta is not None:
            self.member_id = int(meta["member_id"])
            self.cluster_id = int(meta["cluster_id"])
            self.transport.member_id = self.member_id
            self._reads = self._read_batcher()
        fresh = rec.fresh
        rcfg = Config(id=self.member_id, rng=random.Random(),
                      election_tick=cfg.election_ticks, heartbeat_tick=1, applied=base,
                      check_quorum=True, pre_vote=True)
        self.rn = RawNode(rcfg, self.storage)
        self._core = MemberCore(self.rn, self.storage, self._snapshot_policy(), self._early)
        self._core.snaps.wrote(replayed.entry_seq)
        if snap is not None:
            self._restore(snap, time.monotonic())
            if snap_file is not None and snap_file.path is not None:
                self.storage.keep_on_disk(base, snap_file.path)
        self._term = hs.term
        self._commit = hs.commit
        if fresh:
            if meta is None:
                wal.append([metadata_record(self.member_id, self.cluster_id)])
                wal.sync()
                opened.watermark.mark(wal.last_seq)
            if not self.join:
                self.rn.bootstrap(sorted(self.membership.members))
        log.info("raftnode.recovered", member_id=f"{self.member_id:x}", snapshot_index=base,
                 entries=len(entries), term=hs.term, commit=hs.commit, fresh=fresh,
                 join=self.join)

    def _read_batcher(self) -> ReadBatcher[asyncio.Future[int]]:
        timeout = self.config.election_ticks * self.config.tick_ms / 1000.0
        return ReadBatcher(self.member_id, timeout, lambda f: not f.done(),
                           nonce=random.SystemRandom().getrandbits(32))

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for info in self.membership.members.values():
            self.transport.set_peer(info.id, info.peer)
        for name, peer in self.config.initial_cluster.items():
            pid = member_id_for(name, peer, self.config.cluster_token)
            if pid not in self.membership.members and pid not in self.membership.removed:
                self.transport.set_peer(pid, peer)
        assert self.rn is not None
        st = self.rn.status()
        if st.conf_state.voters == (self.member_id,) and not self.removed:
            self.rn.campaign()  # a one-member cluster elects itself at once
        self._tasks = [loop.create_task(self._run()), loop.create_task(self._ticker()),
                       loop.create_task(self._publish())]
        self._kick.set()

    async def stop(self) -> None:
        self._stopped = True
        if self._snap_build is not None:
            self._snap_build.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._snap_build
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.transport.stop()
        self._fail_all(Stopped())
        for save in list(self._snap_saves):  # let a snapshot being written finish
            with contextlib.suppress(Exception):
                await save
        if self._marking is not None:
            with contextlib.suppress(Exception):
                await self._marking
        if self._writer is not None:
            await self._writer.close(self._watermark)
        self._snap_io.shutdown(wait=True)

    # ------------------------------------------------------------------ inputs
    def _is_member(self, member_id: int) -> bool:
        """Whether ``member_id`` is in the current configuration (peer intake check)."""
        return member_id in self.membership.members
    def _deliver(self, msgs: list[Any]) -> None:
        if self.rn is None or self._stopped:
            return
        for m in msgs:
            try:
                self.rn.step(m)
            except RaftError as err:
                log.debug("raftnode.step_failed", error=repr(err))
        self._kick.set()

    def _report_unreachable(self, peer: int) -> None:
        if self.rn is not None and not self._stopped:
            self.rn.report_unreachable(peer)

    def _leader_stream_lost(self, peer: int) -> None:
        """The stream ``peer`` was sending us Raft messages on broke: if ``peer`` leads us,
        the early campaign (``member_core.EarlyCampaign``) starts watching for it."""
        if self._core is not None:
            self._core.leader_stream_lost(peer, time.monotonic())
            self._arm_timer()

    def _arm_timer(self) -> None:
        """One timer, at the member's next wake (``MemberCore.next_wake``)."""
        due = self._core.next_wake() if self._core is not None else None
        if due is None or (self._timer is not None and self._timer_due <= due):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = asyncio.get_running_loop().call_later(
            max(0.0, due - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        assert self._core is not None
        now = time.monotonic()
        happened = self._core.wake(now, lambda peer: self.transport.last_heard.get(peer, 0.0))
        for what in happened:
            if isinstance(what, LeaderLost):
                log.info("raftnode.leader_lost", leader=f"{what.leader:x}",
                         campaign_in_ms=round(max(0.0, what.campaign_at - now) * 1000))
        if happened:
            self._kick.set()
        self._arm_timer()

    def _report_snapshot(self, peer: int, ok: bool) -> None:
        if self.rn is not None and not self._stopped:
            self.rn.report_snapshot(peer, ok)
            self._kick.set()

    async def _ticker(self) -> None:
        interval = self.config.tick_ms / 1000.0
        assert self.rn is not None
        while True:
            await asyncio.sleep(interval)
            if self.removed:
                continue
            self.rn.tick()
            self._mark_durable()
            self._expire_waiters(time.monotonic())
            self._check_reads()
            self._kick.set()

    def _mark_durable(self) -> None:
        """About once a second while records are written, record the WAL's durable end in
        the watermark file (on the snapshot thread: a small file and two fsyncs, off the
        WAL's path), so that a log later cut short or missing a segment is refused at the
        next start instead of read as a shorter log (see ``coord.server.recovery``)."""
        wal, mark = self._wal, self._watermark
        now = time.monotonic()
        if (wal is None or mark is None or self._marking is not None
                or now - self._marked_at < MARK_INTERVAL or wal.durable_seq <= mark.seq):
            return
        self._marked_at = now
        fut = asyncio.get_running_loop().run_in_executor(self._snap_io, mark.mark,
                                                         wal.durable_seq)
        self._marking = fut

        def done(f: asyncio.Future[bool]) -> None:
            self._marking = None
            if not f.cancelled() and f.exception() is not None:
                log.error("raftnode.watermark_failed", error=repr(f.exception()))
        fut.add_done_callback(done)

    # ------------------------------------------------------------------ Ready loop
    async def _run(self) -> None:
        assert self._core is not None
        core = self._core
        while True:
            await self._kick.wait()
            self._kick.clear()
            self._flush_proposals()
            while (actions := core.ready()) is not None:
                try:
                    await self._perform(actions)
                except Exception as exc:  # noqa: BLE001 - any failure is fatal
                    # One bad request cannot get here (the applier answers it with an
                    # error); this is a disk failure or a broken invariant. Say where and
                    # what to do: a restart replays the same entries.
                    ents = core.current.committed_entries if core.current else []
                    log.error("raftnode.ready_failed", error=repr(exc),
                              member=f"{self.member_id:x}",
                              applying=(f"{ents[0].index}..{ents[-1].index}" if ents else "none"),
                              hint=READY_FAILED_HINT)
                    self._stopped = True
                    self._fail_all(Stopped("etcdserver: request timed out"))
                    os._exit(70)  # a member that cannot persist must not keep voting
                core.advance()
                self._flush_proposals()
            self._snapshot_if_due()

    def _term_bound(self) -> int:
        """The highest term this member takes from a peer now (see MAX_TERM_STEP)."""
        leaderless_for = time.monotonic() - self._leaderless_since
        limit = 3 * self.config.election_ticks * self.config.tick_ms / 1000.0
        if self._leader == 0 and leaderless_for >= limit:
            return MAX_TERM
        return self._term + MAX_TERM_STEP

    # ------------------------------------------------------------------ snapshots
    # ------------------------------------------------------------------ reads
    # ------------------------------------------------------------------ membership
