"""RaftNode: a coord member driven by the Raft core (``coord.raft``), for 1, 3 or 5 members.

The Ready loop (one task; the core is only touched from the event loop):

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

Restart: load the newest snapshot, replay the WAL's entries after it (an entry at index i
replaces every earlier-written entry ≥ i) and its latest hard state into a fresh
``MemoryStorage``; the core then re-delivers the committed entries past the snapshot.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import random
import struct
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog
from google.protobuf.message import DecodeError

from coord.aiotools import within
from coord.errors import (
    CoordError,
    LeaderChanged,
    MemberNotFound,
    NoLeader,
    NotLeader,
    RequestTimeout,
    Stopped,
)
from coord.mvcc.store import SnapshotBuild, SnapshotReuse
from coord.pb import internal_pb2, raft_pb2
from coord.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ProposalDropped,
    RaftError,
    RawNode,
    Ready,
    Snapshot,
    StateRole,
)
from coord.server.apply import Applier
from coord.server.config import ServerConfig, member_id_for
from coord.server.membership import Membership, decode_snapshot_data, encode_snapshot_data
from coord.server.recovery import finish, gap_error, open_data_dir, os_problem, writable_check
from coord.server.snapfile import (
    FileBackedStorage,
    decode_snap_file,
    encode_snap_file,
    snap_file_prefix,
)
from coord.server.transport import MAX_TERM, MAX_TERM_STEP, H2PeerStub, Transport
from coord.storage import (
    ENTRY,
    HARD_STATE,
    METADATA,
    SNAPSHOT_MARKER,
    WAL,
    Record,
    SnapshotStore,
    Watermark,
)

log = structlog.get_logger("coord.raftnode")

REQUEST_TIMEOUT = 7.0
"""Seconds a proposal waits to be applied before ``request timed out``."""
CONFIRM_LOSS_TICKS = 3
"""After the leader's stream breaks, a follower waits this many ticks for any message from
it before it believes the leader gone (a live leader reconnects within one or two)."""
EARLY_CAMPAIGN_TICKS = 4
"""A follower that believes its leader gone campaigns within this many ticks (a random
delay, so that two followers rarely split the vote)."""
CATCH_UP_ENTRIES = 1000
"""Entries kept in memory behind a snapshot so that slightly lagging followers need none."""
MARK_INTERVAL = 1.0
"""Seconds between updates of the durable watermark while records are written."""
TAG_REQUEST = b"R"
TAG_ATTRS = b"A"

_ENT = struct.Struct("<QQB")
_HS = struct.Struct("<QQQ")
_MARK = struct.Struct("<QQ")


# ---------------------------------------------------------------------- WAL codec
def encode_entry(e: Entry) -> bytes:
    return _ENT.pack(e.term, e.index, int(e.type)) + e.data


def decode_entry(b: bytes) -> Entry:
    term, index, typ = _ENT.unpack_from(b)
    return Entry(term, index, EntryType(typ), bytes(b[_ENT.size:]))


def read_snap_file(path: Path) -> Snapshot:
    """A member's snapshot file, verified and decoded."""
    f = SnapshotStore.load(path)
    return decode_snap_file(f.index, f.term, f.data)


def wal_release_point(entry_seq: dict[int, int], index: int) -> int:
    """The WAL sequence number before which segments may go once a snapshot at ``index``
    is durable (0: release nothing).

    The record of entry ``index + 1`` when its write is known, else the record of entry
    ``index`` itself: every segment wholly before it holds only entries the snapshot
    covers (hard state and markers are carried into each new segment). Never "everything
    before the newest record": with snapshots built over several loop turns, entries after
    ``index`` may already sit in the WAL while their sequence numbers are not yet known
    here (their write is still being acknowledged) — releasing up to the newest record lost
    them, and a restart then found a gap between the snapshot and the first entry.
    """
    return entry_seq.get(index + 1) or entry_seq.get(index, 0)


READY_FAILED_HINT = (
    "the member stopped so as not to vote or serve on state it could not persist or apply; "
    "fix the cause (disk full, permissions) and restart it. If it stops again at the same "
    "entries, the data dir cannot be recovered: remove the member (etcdctl member remove), "
    "move its data dir away and add it back (etcdctl member add) so it copies the state from "
    "the leader.")


class RaftNode:
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
        self._campaign_rng = random.Random()
        self.transport = Transport(
            self.member_id, cluster_id=lambda: self.cluster_id, deliver=self._deliver,
            report_unreachable=self._report_unreachable, report_snapshot=self._report_snapshot,
            name_of=self.membership_name, stream_lost=self._leader_stream_lost,
            is_member=self._is_member, term_bound=self._term_bound)
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal")
        self._io_jobs = 0
        """Background jobs (a saved snapshot's WAL release) queued on or running on ``_io``."""
        self._inline_sync = os.environ.get("RAFTCRON_INLINE_SYNC", "1") != "0"
        """Whether a lone entry's WAL write and fsync may run on the loop (see ``_handle``)."""
        self._snap_io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snap")
        """Writes snapshot files, so that a large one does not hold up WAL writes."""
        self._snap_build: asyncio.Future[None] | None = None
        """The snapshot being built (at most one; see ``_take_snapshot``)."""
        self._snap_reuse: SnapshotReuse | None = None  # the last snapshot's, for the next
        self._snap_saves: set[asyncio.Task[None]] = set()
        self._wal: WAL | None = None
        writable_check(config.data_dir)
        try:
            self._snaps = SnapshotStore(config.data_dir / "snap")
        except OSError as err:
            raise os_problem(config.data_dir, err) from err
        self._watermark: Watermark | None = None
        self._marking: asyncio.Future[bool] | None = None
        self._marked_at = 0.0
        self._entry_seq: dict[int, int] = {}
        self._kick = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped = False
        self.removed = False
        prefix = (self.member_id & 0xFFFF) << 48 | random.SystemRandom().getrandbits(16) << 32
        self._ids = itertools.count(prefix + 1)
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._props: list[tuple[int, bytes]] = []
        self._conf_waiters: dict[int, asyncio.Future[Any]] = {}
        self._read_waiting: list[asyncio.Future[int]] = []
        self._read_inflight: tuple[bytes, list[asyncio.Future[int]], float] | None = None
        self._read_ctx = itertools.count(1)
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        # Every waiter with its deadline, oldest first (one timeout for all, so the order
        # of deadlines is the order of creation); the ticker fails the expired ones. This
        # is cheaper on the hot path than a timer handle per request.
        self._deadlines: collections.deque[tuple[float, asyncio.Future[Any]]] = (
            collections.deque())
        self._leader_waiters: list[asyncio.Future[None]] = []
        self._applied = 0
        self._snap_index = 0
        self._unsnapped_bytes = 0
        """Bytes of the entries applied since the last durable snapshot."""
        self._snap_size = 0
        """Bytes of the last snapshot (the file's payload this member wrote, or the data of
        the one it restored)."""
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
        self._durable_index = 0

    # ------------------------------------------------------------------ Node protocol
    @property
    def term(self) -> int:
        return self._term

    @property
    def leader_id(self) -> int:
        return self._leader

    @property
    def is_leader(self) -> bool:
        return self._role == StateRole.LEADER and not self._stopped

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
        self._watermark = opened.watermark
        hs = HardState()
        entries: list[Entry] = []
        meta: dict[str, Any] | None = None
        seq = wal.first_seq
        for rec in records:
            if rec.type == ENTRY:
                e = decode_entry(rec.data)
                if entries and e.index <= entries[-1].index:
                    k = e.index - entries[0].index
                    del entries[max(k, 0):]
                entries.append(e)
                self._entry_seq[e.index] = seq
            elif rec.type == HARD_STATE:
                hs = HardState(*_HS.unpack(rec.data))
            elif rec.type == METADATA:
                meta = json.loads(rec.data)
            seq += 1
        snap: Snapshot | None = None
        if snap_file is not None:
            snap = decode_snap_file(snap_file.index, snap_file.term, snap_file.data)
        base = snap.metadata.index if snap else 0
        entries = [e for e in entries if e.index > base]
        if entries and entries[0].index != base + 1:
            raise gap_error(cfg.data_dir, opened, base, entries[0].index)
        if opened.broken and snap is not None:
            log.warning("raftnode.older_snapshot_used", index=base,
                        broken=[p.name for p, _ in opened.broken])
        finish(opened, self._snaps)
        if meta is not None:
            self.member_id = int(meta["member_id"])
            self.cluster_id = int(meta["cluster_id"])
            self.transport.member_id = self.member_id
        fresh = snap is None and not entries and hs == HardState()
        now = time.monotonic()
        if snap is not None:
            self.storage.apply_snapshot(snap)
            self._restore(snap, now)
            if snap_file is not None and snap_file.path is not None:
                self.storage.keep_on_disk(base, snap_file.path)
        self.storage.append(entries)
        if snap is not None and hs.commit < base:
            hs = HardState(hs.term, hs.vote, base)
        self.storage.set_hard_state(hs)
        rcfg = Config(id=self.member_id, rng=random.Random(),
                      election_tick=cfg.election_ticks, heartbeat_tick=1, applied=base,
                      check_quorum=True, pre_vote=True)
        self.rn = RawNode(rcfg, self.storage)
        self._term = hs.term
        self._commit = hs.commit
        self._durable_index = self.storage.last_index()
        if fresh:
            if meta is None:
                wal.append([Record(METADATA, json.dumps(
                    {"member_id": self.member_id, "cluster_id": self.cluster_id}).encode())])
                wal.sync()
                opened.watermark.mark(wal.last_seq)
            if not self.join:
                self.rn.bootstrap(sorted(self.membership.members))
        log.info("raftnode.recovered", member_id=f"{self.member_id:x}", snapshot_index=base,
                 entries=len(entries), term=hs.term, commit=hs.commit, fresh=fresh,
                 join=self.join)

    def _restore(self, snap: Snapshot, now: float) -> None:
        if snap.data:
            membership, state = decode_snapshot_data(snap.data)
            self.applier.restore(state, now)
            membership.cluster_id = membership.cluster_id or self.cluster_id
            self.membership = membership
            self.cluster_id = membership.cluster_id
            self._snap_size = len(snap.data)
        self._applied = snap.metadata.index
        self._snap_index = snap.metadata.index
        self._unsnapped_bytes = 0

    def start(self) -> None:
        # The WAL thread hands each fsync result back to the event loop: with the default
        # 5 ms GIL switch interval that handoff alone can add milliseconds to every Ready.
        sys.setswitchinterval(0.0005)
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
        if self._wal is not None:
            wal, watermark = self._wal, self._watermark

            def close() -> None:
                wal.close()
                if watermark is not None and wal.durable_seq == wal.last_seq:
                    watermark.mark(wal.durable_seq, clean=True)

            await asyncio.get_running_loop().run_in_executor(self._io, close)
        self._io.shutdown(wait=True)
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
        """The stream ``peer`` was sending us Raft messages on broke. If ``peer`` leads us
        and nothing more is heard from it for ``CONFIRM_LOSS_TICKS`` ticks (a live leader
        reconnects and sends a heartbeat well within that), its process most likely died
        — a kill -9 closes its sockets at once: forget it and campaign after a random delay
        of up to ``EARLY_CAMPAIGN_TICKS`` ticks, unless a leader shows up first. A failover
        then takes well under a second instead of a whole election timeout. Should the
        leader be alive after all, the other members, still hearing from it, refuse the
        pre-vote (check-quorum's lease) and its next heartbeat restores it here."""
        rn = self.rn
        if rn is None or self._stopped or self.removed or peer != rn.raft.lead:
            return
        lost_at = time.monotonic()
        term = rn.raft.term
        asyncio.get_running_loop().call_later(
            CONFIRM_LOSS_TICKS * self.config.tick_ms / 1000,
            self._confirm_leader_lost, peer, term, lost_at)

    def _confirm_leader_lost(self, peer: int, term: int, lost_at: float) -> None:
        rn = self.rn
        if (rn is None or self._stopped or self.removed or rn.raft.lead != peer
                or rn.raft.term != term
                or self.transport.last_heard.get(peer, 0.0) > lost_at):
            return  # a leader is back (or another one was elected)
        rn.forget_leader()
        self._kick.set()
        delay = self._campaign_rng.uniform(0.0, EARLY_CAMPAIGN_TICKS * self.config.tick_ms / 1000)
        asyncio.get_running_loop().call_later(delay, self._early_campaign, term)
        log.info("raftnode.leader_lost", leader=f"{peer:x}", campaign_in_ms=round(delay * 1000))

    def _early_campaign(self, term: int) -> None:
        rn = self.rn
        if (rn is None or self._stopped or self.removed or rn.raft.term != term
                or not rn.follower_without_leader):
            return  # a leader was elected meanwhile (or this member voted for a candidate)
        rn.campaign()
        self._kick.set()

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
        assert self.rn is not None
        rn = self.rn
        while True:
            await self._kick.wait()
            self._kick.clear()
            self._flush_proposals()
            while rn.has_ready():
                rd = rn.ready()
                try:
                    await self._handle(rd)
                except Exception as exc:  # noqa: BLE001 - any failure is fatal
                    # One bad request cannot get here (the applier answers it with an
                    # error); this is a disk failure or a broken invariant. Say where and
                    # what to do: a restart replays the same entries.
                    ents = rd.committed_entries
                    log.error("raftnode.ready_failed", error=repr(exc),
                              member=f"{self.member_id:x}",
                              applying=(f"{ents[0].index}..{ents[-1].index}" if ents else "none"),
                              hint=READY_FAILED_HINT)
                    self._stopped = True
                    self._fail_all(Stopped("etcdserver: request timed out"))
                    os._exit(70)  # a member that cannot persist must not keep voting
                rn.advance(rd)
                self._flush_proposals()
            self._after_advance()

    async def _handle(self, rd: Ready) -> None:
        assert self.rn is not None and self._wal is not None
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.leader, rd.soft_state.role)
        self.transport.send(rd.messages)
        records: list[Record] = []
        snap = rd.snapshot
        if snap is not None:
            if not snap.data:  # the bootstrap snapshot: store the initial membership too
                snap = Snapshot(snap.metadata, encode_snapshot_data(
                    self.membership, self.applier.snapshot()))
            data = encode_snap_file(snap)
            md = snap.metadata
            snap_path = await asyncio.get_running_loop().run_in_executor(
                self._io, self._snaps.save, md.index, md.term, data)
            del data
            records.append(Record(SNAPSHOT_MARKER, _MARK.pack(md.index, md.term)))
        for e in rd.entries:
            records.append(Record(ENTRY, encode_entry(e)))
        if rd.hard_state is not None:
            hs = rd.hard_state
            records.append(Record(HARD_STATE, _HS.pack(hs.term, hs.vote, hs.commit)))
        # Committed entries this member already holds durably are applied while this
        # Ready's write is in flight (the leader answers its clients without waiting for
        # the fsync of the proposals that arrived since); the rest after it.
        early: list[Entry] = []
        rest = rd.committed_entries
        if snap is None and rest:
            limit = self._durable_index
            if rd.entries:
                limit = min(limit, rd.entries[0].index - 1)
            k = 0
            while k < len(rest) and rest[k].index <= limit:
                k += 1
            early, rest = rest[:k], rest[k:]
        for rs in rd.read_states:
            self._read_done(rs.request_ctx, rs.index)
        if (records and rd.must_sync and self._inline_sync and not self._io_jobs
                and not self._props and len(rd.entries) <= 1):
            # One entry and nothing queued behind it (a lone client): write and fsync here on
            # the loop. The thread hand-off costs two wake-ups, more than the fsync itself
            # (0.1-0.2 ms here), and under load a Ready carries many entries and goes to the
            # WAL thread as before. Single-client put and lock: ~15 % more ops/s.
            last = self._wal.append(records)
            self._wal.sync()
            self._note_written(records, last)
            if early:
                self._apply(early, time.monotonic())
        elif records and not rd.must_sync and not self._io_jobs:
            # Nothing to make durable (only the commit index moved): the WAL buffers the
            # records for its next fsync, here on the loop — a thread handoff would cost
            # more than the encoding. The WAL thread is idle (no snapshot job), so the WAL
            # is used from one thread at a time.
            self._wal.append(records)
            if early:
                self._apply(early, time.monotonic())
        elif records:
            wal = self._wal
            must_sync = rd.must_sync

            def write() -> int:
                last = wal.append(records)
                if must_sync:
                    wal.sync()
                return last

            pending = asyncio.get_running_loop().run_in_executor(self._io, write)
            if early:
                self._apply(early, time.monotonic())
            last = await pending
            self._note_written(records, last)
        elif early:
            self._apply(early, time.monotonic())
        if snap is not None:
            self.storage.apply_snapshot(snap)
            self.storage.keep_on_disk(snap.metadata.index, snap_path)
            self._durable_index = snap.metadata.index
        if rd.entries:
            self.storage.append(rd.entries)
            self._durable_index = rd.entries[-1].index
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)
            self._term = rd.hard_state.term
            self._commit = rd.hard_state.commit
        self.transport.send(rd.messages_after_persist)
        now = time.monotonic()
        if snap is not None:
            self._restore(snap, now)
            for info in self.membership.members.values():
                self.transport.set_peer(info.id, info.peer)
            self._snap_reuse = None  # the store was restored: nothing to reuse
            log.info("raftnode.snapshot_installed", index=snap.metadata.index)
            self._on_applied()
        if rest:
            self._apply(rest, now)

    def _note_written(self, records: list[Record], last: int) -> None:
        """Remember the WAL sequence number of each entry among ``records``, the last of
        which got ``last`` (a snapshot releases WAL segments by them)."""
        first = last - len(records) + 1
        for i, rec in enumerate(records):
            if rec.type == ENTRY:
                self._entry_seq[_ENT.unpack_from(rec.data)[1]] = first + i

    def _after_advance(self) -> None:
        """Snapshot every ``snapshot_count`` entries, or sooner once the entries applied
        since the last snapshot hold ``snapshot_bytes`` — or as many bytes as that snapshot
        had, if more: the log in memory stays about the size of the data, and a snapshot
        (which writes the whole store) is written at most once per its own size of new
        entries."""
        if self._stopped:
            return
        if (self._applied - self._snap_index >= self.config.snapshot_count
                or self._unsnapped_bytes >= max(self.config.snapshot_bytes, self._snap_size)):
            self._take_snapshot()

    def _term_bound(self) -> int:
        """The highest term this member takes from a peer now (see MAX_TERM_STEP)."""
        leaderless_for = time.monotonic() - self._leaderless_since
        limit = 3 * self.config.election_ticks * self.config.tick_ms / 1000.0
        if self._leader == 0 and leaderless_for >= limit:
            return MAX_TERM
        return self._term + MAX_TERM_STEP

    def _on_soft_state(self, leader: int, role: StateRole) -> None:
        old = self._leader
        if leader == 0 and old != 0:
            self._leaderless_since = time.monotonic()
        was_leader = self._role == StateRole.LEADER
        self._leader = leader
        self._role = role
        # The lessor follows leadership at once (Core's loop also checks periodically):
        # a new leader extends every lease, as etcd's Promote does.
        if role == StateRole.LEADER and not was_leader:
            self.applier.lessor.promote(time.monotonic())
        elif was_leader and role != StateRole.LEADER:
            self.applier.lessor.demote()
        if leader != old:
            log.info("raftnode.leader", leader=f"{leader:x}", role=role.name,
                     term=self.rn.raft.term if self.rn else 0)
            if old != 0:
                self._fail_waiters(LeaderChanged())
            if self._read_inflight is not None:
                _, batch, _ = self._read_inflight
                self._read_inflight = None
                self._read_waiting[:0] = batch
            if leader != 0:
                for f in self._leader_waiters:
                    if not f.done():
                        f.set_result(None)
                self._leader_waiters.clear()
                self._issue_read()

    # ------------------------------------------------------------------ apply
    def _apply(self, entries: list[Entry], now: float) -> None:
        assert self.rn is not None
        for e in entries:
            if e.index <= self._applied:
                continue
            if e.type == EntryType.CONF_CHANGE:
                self._apply_conf_change(e)
            elif e.data[:1] == TAG_REQUEST:
                self._unsnapped_bytes += len(e.data)
                self._apply_request(e, now)
            elif e.data[:1] == TAG_ATTRS:
                with contextlib.suppress(ValueError, KeyError):
                    self.membership.apply_attributes(e.data[1:])
            self._applied = e.index
        self._on_applied()
        if self._applied_waiters:
            keep = []
            for idx, fut in self._applied_waiters:
                if idx <= self._applied:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    keep.append((idx, fut))
            self._applied_waiters = keep

    def _apply_request(self, e: Entry, now: float) -> None:
        """Apply one client request entry. The applier is total (a request that fails at
        apply is rolled back and answered ApplyFailed); undecodable bytes are logged and
        skipped, identically on every member. Only an ApplyInvariantError (a failed
        rollback) propagates, and stops the member."""
        try:
            req = internal_pb2.InternalRequest.FromString(e.data[1:])
        except DecodeError as err:
            log.error("apply.undecodable_entry", index=e.index, error=str(err))
            return
        fut = self._waiters.get(req.id)
        try:
            resp = self.applier.apply(req, now)
        except CoordError as err:
            if fut is not None and not fut.done():
                fut.set_exception(err)
        else:
            if fut is not None and not fut.done():
                fut.set_result(resp)

    def _apply_conf_change(self, e: Entry) -> None:
        assert self.rn is not None
        cc = ConfChange.decode(e.data)
        ctx: dict[str, Any] = json.loads(cc.context) if cc.context else {}
        try:
            self.rn.apply_conf_change(cc)
        except RaftError as err:
            log.warning("raftnode.conf_change_rejected", error=repr(err))
        self.membership.apply_conf_change(cc)
        if cc.type == ConfChangeType.REMOVE_NODE:
            self.transport.remove_peer(cc.node_id)
            if cc.node_id == self.member_id:
                self.removed = True
                log.warning("raftnode.removed_from_cluster")
        else:
            peer = self.membership.peer_of(cc.node_id)
            if peer:
                self.transport.set_peer(cc.node_id, peer)
        log.info("raftnode.conf_change", type=cc.type.name, node=f"{cc.node_id:x}", index=e.index)
        fut = self._conf_waiters.get(int(ctx.get("rid", 0)))
        if fut is not None and not fut.done():
            fut.set_result(None)

    # ------------------------------------------------------------------ snapshots
    def _take_snapshot(self) -> None:
        """Start a snapshot of the state at the applied index. The store's part (its whole
        history since the last compaction: ~10 µs a revision) is serialised in slices
        between other work, so a large store never stalls the loop — heartbeats, client
        requests — for the whole build (it took 0.2 to 1 s at 20,000 to 80,000 revisions).
        What the previous snapshot serialised and has not changed since (no compaction or
        restore in between) is copied from it: a build serialises only the revisions
        applied since, about ``snapshot_count`` of them, however long the history."""
        assert self.rn is not None
        if self._snap_build is not None or self._snap_saves:
            # One at a time: a build waits until the previous snapshot's file is written,
            # so a slow disk cannot pile up whole snapshots in memory (the next applied
            # entry tries again).
            return
        index = self._applied
        self._snap_bytes_at = self._unsnapped_bytes
        cs = self.rn.status().conf_state
        # Everything of the state at ``index`` is captured in this loop turn: the membership
        # (the snapshot data's head), the leases, and the store (its first piece).
        head = encode_snapshot_data(self.membership, b"")
        lessor = self.applier.lessor.snapshot()
        build = self.applier.store.snapshot_chunks(reuse=self._snap_reuse)
        parts = [next(build)]
        self._snap_build = asyncio.ensure_future(
            self._build_snapshot(index, cs, head, lessor, parts, build))

    async def _build_snapshot(self, index: int, cs: ConfState, head: bytes, lessor: bytes,
                              parts: list[bytes | memoryview], build: SnapshotBuild) -> None:
        try:
            for piece in build:
                parts.append(piece)
                await asyncio.sleep(0)
                if self._stopped:
                    return
        except ValueError as err:  # compacted or restored meanwhile: next time
            log.info("raftnode.snapshot_restarted", index=index, reason=str(err))
            return
        finally:
            self._snap_build = None
        pieces, store_at = Applier.pack_snapshot_parts(parts, lessor)
        del parts
        # The file's payload, in pieces written one after the other: the data is never
        # joined in memory (the store part alone is tens of MB for 100,000 keys).
        payload = [snap_file_prefix(cs), head, *pieces]
        del pieces
        reuse_at = len(payload[0]) + len(head) + store_at
        self._save_snapshot(index, cs, payload, build.reuse, reuse_at)

    def _save_snapshot(self, index: int, cs: ConfState, payload: list[bytes | memoryview],
                       reuse: SnapshotReuse | None, reuse_at: int) -> None:
        assert self._wal is not None
        try:
            term = self.storage.term(index)
        except RaftError as err:  # a snapshot from the leader replaced the log meanwhile
            log.warning("raftnode.snapshot_skipped", error=repr(err))
            return
        self._snap_index = index
        wal = self._wal
        release_at = wal_release_point(self._entry_seq, index)
        for i in [i for i in self._entry_seq if i <= index]:
            del self._entry_seq[i]
        save = asyncio.ensure_future(self._persist_snapshot(
            index, term, cs, payload, (reuse, reuse_at), wal, release_at))
        self._snap_saves.add(save)
        save.add_done_callback(self._snap_saves.discard)

    async def _persist_snapshot(self, index: int, term: int, cs: ConfState,
                                payload: list[bytes | memoryview],
                                reuse: tuple[SnapshotReuse | None, int],
                                wal: WAL, release_at: int) -> None:
        """Write the snapshot file on its own thread — a WAL write does not wait behind it.
        Once it is durable: the core's storage takes the snapshot (its data stays in the
        file, :mod:`coord.server.snapfile`) and drops the log entries it covers, the next
        build reuses the file's bytes (mapped, not read), and on the WAL thread a new
        segment starts and the segments the snapshot covers go."""
        snaps = self._snaps
        loop = asyncio.get_running_loop()
        size = sum(len(p) for p in payload)

        watermark = self._watermark

        def release() -> None:
            wal.cut()
            if watermark is not None:  # the new segment exists: deleting it is now seen
                watermark.mark(wal.durable_seq)
            if release_at:
                wal.release_before(release_at)
            snaps.purge(keep=2)

        try:
            path = await loop.run_in_executor(self._snap_io, snaps.save, index, term, payload)
            del payload
            try:
                self.storage.create_snapshot(index, cs, b"")
            except RaftError as err:  # a snapshot from the leader replaced it meanwhile
                log.warning("raftnode.snapshot_skipped", error=repr(err))
                return
            self.storage.keep_on_disk(index, path)
            self._snap_size = size
            # What this snapshot covers no longer counts; what was applied since does.
            self._unsnapped_bytes = max(0, self._unsnapped_bytes - self._snap_bytes_at)
            compact_to = self._compact_point(index)
            if compact_to > self.storage.first_index():
                self.storage.compact(compact_to)
            base, at = reuse
            if base is not None:
                self._snap_reuse = base.over(snaps.map_payload(path)[at:])
            log.info("raftnode.snapshot", index=index, compacted_to=compact_to, bytes=size)
            self._io_jobs += 1
            try:
                await loop.run_in_executor(self._io, release)
            finally:
                self._io_jobs -= 1
        except Exception as err:  # noqa: BLE001 - logged: the next snapshot tries again
            log.error("raftnode.snapshot_failed", index=index, error=repr(err))

    def _compact_point(self, index: int) -> int:
        """Where to compact the in-memory log after a snapshot at ``index``: keep up to
        ``CATCH_UP_ENTRIES`` (at most half of ``snapshot_count``) entries behind it for
        followers slightly behind, but no more than ``snapshot_bytes / 2`` of them — the
        entries of large txns would otherwise keep tens of MB of values a second time."""
        count = min(CATCH_UP_ENTRIES, max(1, self.config.snapshot_count // 2))
        budget = self.config.snapshot_bytes // 2
        lo = max(self.storage.first_index(), index - count + 1)
        kept = used = 0
        for e in reversed(self.storage.entries(lo, index + 1)):
            used += len(e.data)
            if used > budget:
                break
            kept += 1
        return index - kept

    # ------------------------------------------------------------------ proposals
    def _bounded(self, fut: asyncio.Future[Any]) -> asyncio.Future[Any]:
        """``fut``, which fails with ``request timed out`` if it is not done within
        ``REQUEST_TIMEOUT`` (checked every tick)."""
        self._deadlines.append((time.monotonic() + REQUEST_TIMEOUT, fut))
        return fut

    def _expire_waiters(self, now: float) -> None:
        d = self._deadlines
        while d and (d[0][1].done() or d[0][0] <= now):
            _, fut = d.popleft()
            if not fut.done():
                fut.set_exception(RequestTimeout())

    def _next_id(self) -> int:
        return next(self._ids)

    async def _wait_leader(self) -> None:
        if self._leader != 0:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._leader_waiters.append(fut)
        timeout = 2 * self.config.election_ticks * self.config.tick_ms / 1000.0
        try:
            await within(fut, timeout)
        except TimeoutError:
            raise NoLeader() from None

    async def propose(self, req: internal_pb2.InternalRequest) -> Any:
        """Replicate ``req``; return the applier's response once it is applied here."""
        if self._stopped or self.removed:
            raise Stopped()
        if self._leader == 0:
            await self._wait_leader()
        assert self.rn is not None
        req.id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[req.id] = fut
        try:
            # Queued and stepped in as one PROP per Ready-loop turn: one append message per
            # follower for a whole batch of proposals instead of one per proposal.
            self._props.append((req.id, TAG_REQUEST + req.SerializeToString()))
            self._kick.set()
            return await self._bounded(fut)
        finally:
            self._waiters.pop(req.id, None)

    def _flush_proposals(self) -> None:
        if not self._props or self.rn is None:
            return
        batch, self._props = self._props, []
        try:
            self.rn.step(Message(MessageType.PROP, self.member_id, self.member_id,
                                 entries=tuple(Entry(0, 0, data=d) for _, d in batch)))
        except ProposalDropped:
            for rid, _ in batch:  # never appended anywhere: safe for the client to retry
                fut = self._waiters.get(rid)
                if fut is not None and not fut.done():
                    fut.set_exception(NoLeader())

    def _fail_waiters(self, err: CoordError) -> None:
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(err)
        for fut in self._conf_waiters.values():
            if not fut.done():
                fut.set_exception(err)

    def _fail_all(self, err: CoordError) -> None:
        self._fail_waiters(err)
        for rf in self._read_waiting:
            if not rf.done():
                rf.set_exception(err)
        if self._read_inflight is not None:
            for rf in self._read_inflight[1]:
                if not rf.done():
                    rf.set_exception(err)
        for _, af in self._applied_waiters:
            if not af.done():
                af.set_exception(err)
        for lf in self._leader_waiters:
            if not lf.done():
                lf.set_exception(err)

    # ------------------------------------------------------------------ reads
    async def read_index(self) -> None:
        """Linearizable-read barrier: ReadIndex through the leader, then wait until this
        member applied up to the read index.

        On the leader of a one-voter cluster no round is needed: no other member can
        commit, so the commit index is the read index — once this leader has committed an
        entry of its own term (until then the commit index it recovered may lag a write
        that was acknowledged before a restart, Raft §6.4, the rule etcd applies to the
        multi-member case). The read then only waits for ``applied >= commit``: no
        message, no Ready, no future when the member is caught up."""
        if self._stopped or self.removed:
            raise Stopped()
        if self._leader == 0:
            await self._wait_leader()
        assert self.rn is not None
        r = self.rn.raft
        if r.state == StateRole.LEADER and r.trk.is_singleton() and r.id in r.trk.voters:
            if r.log.term_or_zero(r.log.committed) != r.term:
                # this term's first entry (the no-op) is at or before the last index
                await self._wait_applied(r.log.last_index())
                await self.read_index()
                return
            index = r.log.committed
            if index > self._applied:
                await self._wait_applied(index)
            return
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._read_waiting.append(fut)
        self._issue_read()
        index = await self._bounded(fut)
        if index > self._applied:
            await self._wait_applied(index)

    async def _wait_applied(self, index: int) -> None:
        """Wait until this member applied ``index`` (``request timed out`` after
        ``REQUEST_TIMEOUT``)."""
        if index <= self._applied:
            return
        af: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._applied_waiters.append((index, af))
        await self._bounded(af)

    def _issue_read(self) -> None:
        if self._read_inflight is not None or not self._read_waiting or self.rn is None:
            return
        self._read_waiting = [f for f in self._read_waiting if not f.done()]
        if not self._read_waiting:
            return
        ctx = f"{self.member_id:x}/{next(self._read_ctx)}".encode()
        batch, self._read_waiting = self._read_waiting, []
        try:
            self.rn.read_index(ctx)
        except ProposalDropped:
            self._read_waiting[:0] = batch  # retried when a leader is known
            return
        self._read_inflight = (ctx, batch, time.monotonic())
        self._kick.set()

    def _read_done(self, ctx: bytes, index: int) -> None:
        if self._read_inflight is None or self._read_inflight[0] != ctx:
            return
        _, batch, _ = self._read_inflight
        self._read_inflight = None
        for f in batch:
            if not f.done():
                f.set_result(index)
        self._issue_read()

    def _check_reads(self) -> None:
        """Re-issue a ReadIndex that got no answer within an election timeout (lost)."""
        if self._read_inflight is None:
            self._issue_read()
            return
        _, batch, started = self._read_inflight
        limit = self.config.election_ticks * self.config.tick_ms / 1000.0
        if time.monotonic() - started > limit:
            self._read_inflight = None
            self._read_waiting[:0] = batch
            self._issue_read()

    # ------------------------------------------------------------------ leases
    async def lease_renew(self, lease_id: int) -> int:
        """Renew on the leader's lessor (locally, or forwarded to the leader)."""
        if self.is_leader:
            return self.applier.lessor.renew(lease_id, time.monotonic())
        await self._wait_leader()
        stub = self.transport.stub(self._leader)
        if stub is None:
            raise NoLeader()
        try:
            resp = await stub.LeaseRenew(raft_pb2.LeaseRenewRequest(id=lease_id), timeout=3.0)
        except Exception as err:
            raise NoLeader() from err
        if resp.not_leader:
            raise NotLeader()
        return int(resp.ttl)

    def serve_lease_ttl(self, lease_id: int) -> tuple[int, int, list[bytes]] | None:
        if not self.is_leader:
            return None
        return self.applier.lessor.time_to_live(lease_id, time.monotonic())

    async def lease_time_to_live(self, lease_id: int) -> tuple[int, int, list[bytes]]:
        """The leader's view of a lease (followers have no deadlines), as etcd forwards."""
        if self.is_leader:
            return self.applier.lessor.time_to_live(lease_id, time.monotonic())
        await self._wait_leader()
        stub = self.transport.stub(self._leader)
        if stub is None:
            raise NoLeader()
        try:
            resp = await stub.LeaseTimeToLive(raft_pb2.LeaseTTLRequest(id=lease_id), timeout=3.0)
        except Exception as err:
            raise NoLeader() from err
        if resp.not_leader:
            raise NotLeader()
        return int(resp.ttl), int(resp.granted), list(resp.keys)

    async def serve_lease_renew(self, lease_id: int) -> tuple[int, bool]:
        if not self.is_leader:
            return 0, True
        try:
            return self.applier.lessor.renew(lease_id, time.monotonic()), False
        except NotLeader:
            return 0, True

    # ------------------------------------------------------------------ membership
    async def discover_cluster(self) -> None:
        """Joining (``--initial-cluster-state existing``, empty data dir): ask the other
        members for the cluster id, and check that they added this member (by peer URL)."""
        me = self.config.listen_peer
        for name, peer in self.config.initial_cluster.items():
            if name == self.config.name:
                continue
            try:
                resp = await H2PeerStub(peer).Join(raft_pb2.MemberJoinRequest(peer=me), timeout=3)
            except ConnectionError as err:
                log.warning("raftnode.join_ask_failed", peer=peer, error=str(err))
                continue
            if not resp.found:
                log.warning("raftnode.join_not_added", peer=peer,
                            hint="run `etcdctl member add` for this member first")
                continue
            if resp.member_id != self.member_id:
                log.warning("raftnode.join_id_mismatch", expected=f"{self.member_id:x}",
                            got=f"{resp.member_id:x}")
            self.cluster_id = resp.cluster_id
            log.info("raftnode.join_discovered", cluster_id=f"{self.cluster_id:x}", via=peer)
            return

    def lookup_peer(self, peer: str) -> tuple[int, int]:
        info = self.membership.by_peer(peer)
        return (info.id if info else 0), self.cluster_id

    async def _publish(self) -> None:
        """Publish this member's name and client URL through the log (etcd's publish)."""
        client = f"http://{self.config.listen_client}"
        while True:
            await asyncio.sleep(0.2)
            info = self.membership.members.get(self.member_id)
            if self.removed or info is None:
                if self.removed:
                    return
                continue
            if info.name == self.config.name and info.clients == [client]:
                await asyncio.sleep(1.0)
                continue
            if self._leader == 0 or self.rn is None:
                continue
            data = json.dumps({"id": self.member_id, "name": self.config.name,
                               "clients": [client]}).encode()
            with contextlib.suppress(ProposalDropped):
                self.rn.propose(TAG_ATTRS + data)
                self._kick.set()
            await asyncio.sleep(1.0)

    async def change_membership(self, cc_type: ConfChangeType, node_id: int,
                                peer: str = "", name: str = "") -> None:
        """Propose a conf change and wait until it is applied here."""
        if self._stopped:
            raise Stopped()
        await self._wait_leader()
        assert self.rn is not None
        if cc_type == ConfChangeType.REMOVE_NODE and node_id not in self.membership.members:
            raise MemberNotFound()
        rid = self._next_id()
        ctx = json.dumps({"rid": rid, "peer": peer, "name": name}).encode()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._conf_waiters[rid] = fut
        try:
            deadline = time.monotonic() + REQUEST_TIMEOUT
            while True:
                try:
                    self.rn.propose_conf_change(ConfChange(cc_type, node_id, ctx))
                    break
                except ProposalDropped:
                    # an earlier change (or the leader's no-op) is not applied yet
                    if time.monotonic() > deadline:
                        raise RequestTimeout() from None
                    await asyncio.sleep(0.05)
            self._kick.set()
            try:
                await within(asyncio.shield(fut), REQUEST_TIMEOUT)
            except TimeoutError:
                raise RequestTimeout() from None
        finally:
            self._conf_waiters.pop(rid, None)

    def learner_in_sync(self, node_id: int) -> bool:
        assert self.rn is not None
        st = self.rn.status()
        pr = st.progress.get(node_id)
        if pr is None:
            return False
        # etcd's rule (isLearnerReady): the learner's match is at least 90% of the
        # leader's commit — and it must have answered at all, or promoting it could cost
        # the cluster its quorum.
        return pr.match > 0 and pr.match >= 0.9 * self._commit

    def ready_to_remove(self, node_id: int) -> bool:
        """etcd's strict reconfig check: after removing ``node_id`` the voters that are
        still active must form a quorum of the remaining voters (never zero voters)."""
        assert self.rn is not None
        progress = self.rn.status().progress
        if not progress:
            return True  # not the leader: the leader decides when the proposal arrives
        voters = [i for i, pr in progress.items() if not pr.is_learner]
        if node_id not in voters:
            return True  # removing a learner never costs a quorum
        remaining = [i for i in voters if i != node_id]
        if not remaining:
            return False
        started = [i for i in remaining if i == self.member_id or progress[i].recent_active]
        return len(started) >= len(remaining) // 2 + 1

    def transfer_leader(self, target: int) -> None:
        assert self.rn is not None
        self.rn.transfer_leader(target)
        self._kick.set()
