"""N production members, their disks and state machines, on virtual time.

:class:`Cluster` owns one :class:`SimNode` per node id: a ``MemberCore`` (the server's
sans-I/O member: a ``RawNode`` over a ``MemoryStorage`` mirror) over its simulated
:class:`~tests.sim.disk.Disk`, and a :class:`~tests.sim.kv.KVStore` applier. Ticks,
message deliveries, proposals and crash/restart are events on the run's
:class:`~tests.sim.eventloop.EventLoop`; after each one the touched node's Readys are
handled (:mod:`tests.sim.perform`). With ``batch_ms`` a node gathers proposals and hands
them over with one ``propose_many``.

A crash drops the node's volatile disk writes (or keeps a torn prefix), its pending client
calls and its in-memory state; a restart rebuilds everything from the durable image with
the production recovery decision (``member_ready.recover``). The
:class:`~tests.sim.invariants.Invariants` hooks are called at each state change.

Clients talk to one node each; a node proposes (a follower's proposal is forwarded to the
leader by the core) and answers its client only after applying the entry itself; an
unanswered call times out and is recorded as indeterminate.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from coord.raft import (
    ConfChange,
    Config,
    ConfState,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDropped,
    RawNode,
    ReadOnlyOption,
    StateRole,
)
from coord.raft.describe import describe_message
from coord.server.member_core import EarlyCampaign, ReadBatcher
from coord.server.member_ready import LogGap, MemberCore
from coord.server.member_snap import SnapshotPolicy
from coord.server.member_waiters import Waiters
from tests.sim.disk import Disk
from tests.sim.eventloop import EventLoop, sub_rng
from tests.sim.invariants import Invariants, Violation
from tests.sim.kv import KVStore, Request, Result
from tests.sim.network import NetOptions, Network
from tests.sim.options import SimOptions
from tests.sim.perform import Performing


@dataclass
class Call:
    """A client request waiting for its answer at one node."""

    client: int
    op_id: int
    req: Request


@dataclass
class SimNode:
    id: int
    disk: Disk = field(default_factory=Disk)
    raw: RawNode | None = None
    storage: MemoryStorage | None = None
    core: MemberCore | None = None  # the production member's Ready handling over raw
    kv: KVStore = field(default_factory=KVStore)
    applied: int = 0
    conf_state: ConfState = field(default_factory=ConfState)
    hs: HardState = field(default_factory=HardState)
    role: StateRole = StateRole.FOLLOWER
    leader: int = 0
    up: bool = False
    created: bool = False
    incarnation: int = 0
    snap_index: int = 0
    waits: Waiters[Call] = field(default_factory=lambda: Waiters(0.0))  # the member's
    batch: list[Call] = field(default_factory=list)  # proposals waiting for propose_many
    reads: ReadBatcher[Call] | None = None  # the production member's ReadIndex batching


Responder = Callable[[Call, Result | None, int], None]  # (call, result or None=fail, index)


class Cluster(Performing):
    def __init__(self, opts: SimOptions, loop: EventLoop) -> None:
        self.opts = opts
        self.loop = loop
        self.trace = loop.trace
        self.inv = Invariants()
        self.calm = False  # liveness phase: no more injected crashes
        self.ids = list(range(1, opts.voters + opts.spares + 1))
        self.founders = list(range(1, opts.voters + 1))
        self.nodes = {
            i: SimNode(i, kv=KVStore(dedup="no_dedup" not in opts.sim_bugs)) for i in self.ids
        }
        self.net = Network(
            loop,
            sub_rng(opts.seed, "net"),
            NetOptions(
                loss=opts.loss, dup=opts.dup, min_delay=opts.min_delay, mean_delay=opts.mean_delay
            ),
            self.ids,
            self._deliver,
            self.is_up,
            self._on_drop,
        )
        self.cp_rng = sub_rng(opts.seed, "crashpoints")
        self.disk_rng = sub_rng(opts.seed, "disk")
        self.tick_rng = sub_rng(opts.seed, "ticks")
        self.lat_rng = sub_rng(opts.seed, "disk.latency")
        self.early_rng = sub_rng(opts.seed, "nemesis.early")  # the early campaign's delays
        skew_rng = sub_rng(opts.seed, "skew")
        self.tick_period = {
            i: max(1, round(opts.tick_ms * (1 + skew_rng.uniform(-opts.tick_skew, opts.tick_skew))))
            for i in self.ids
        }
        self.respond: Responder = lambda call, res, index: None
        self.refuse: Callable[[Call], None] = lambda call: None
        self.on_crash: Callable[[int], None] = lambda nid: None
        self.last_heard: dict[tuple[int, int], int] = {}  # (to, frm) -> time of delivery
        self.stats: dict[str, int] = {
            "readys": 0, "crashes": 0, "crash_points": 0, "restarts": 0, "snapshots_taken": 0,
            "snapshots_installed": 0, "conf_changes": 0, "elections": 0, "applied": 0,
            "applied_during_write": 0,
        }  # fmt: skip
        for nid in self.founders:
            self.start(nid, bootstrap=True)

    # -- lifecycle -----------------------------------------------------------------------
    def is_up(self, nid: int) -> bool:
        n = self.nodes.get(nid)
        return n is not None and n.up

    def _config(self, nid: int, applied: int) -> Config:
        n = self.nodes[nid]
        o = self.opts
        return Config(
            id=nid,
            rng=sub_rng(o.seed, f"raft{nid}.{n.incarnation}"),
            election_tick=o.election_tick,
            heartbeat_tick=o.heartbeat_tick,
            applied=applied,
            max_size_per_msg=o.max_size_per_msg,
            max_inflight_msgs=o.max_inflight,
            max_inflight_bytes=o.max_inflight_bytes,
            max_committed_size_per_ready=o.max_committed_size_per_ready,
            check_quorum=o.check_quorum,
            pre_vote=o.pre_vote,
            read_only=ReadOnlyOption.LEASE_BASED
            if o.lease_reads and o.check_quorum
            else ReadOnlyOption.SAFE,
            bugs=o.bugs,
        )

    def start(self, nid: int, *, bootstrap: bool = False) -> None:
        """Create a node over an empty disk (a founder bootstraps, a joiner waits)."""
        n = self.nodes[nid]
        assert not n.created
        n.created = True
        n.storage = MemoryStorage()
        n.raw = RawNode(self._config(nid, 0), n.storage)
        n.core = MemberCore(n.raw, n.storage, self._policy(), self._early(n))
        n.reads = self._read_batcher(nid)
        if bootstrap:
            n.raw.bootstrap(self.founders)
        self.inv.new_node(nid)
        n.up = True
        self.trace.log(f"n{nid} start{' (bootstrap)' if bootstrap else ' (joining, empty)'}")
        self.loop.after(self.tick_rng.randrange(self.opts.tick_ms), self._tick, nid, n.incarnation)
        self.drive(n)

    def _early(self, n: SimNode) -> EarlyCampaign:
        """The member's early campaign, for the node's current incarnation."""
        inc = n.incarnation
        return EarlyCampaign(lambda: n.raw if n.incarnation == inc else None,
                             self.tick_period[n.id], self.early_rng)

    def _policy(self) -> SnapshotPolicy:
        """The production member's snapshot rules, by entry count only."""
        return SnapshotPolicy(self.opts.snapshot_every, sys.maxsize, self.opts.snapshot_keep,
                              sys.maxsize)

    def _read_batcher(self, nid: int) -> ReadBatcher[Call]:
        return ReadBatcher(nid, self.opts.election_tick * self.tick_period[nid],
                           nonce=self.nodes[nid].incarnation)

    def crash(self, nid: int, why: str) -> None:
        n = self.nodes[nid]
        if not n.up:
            return
        n.up = False
        n.raw = None
        n.storage = None
        n.core = None
        lost = n.disk.crash(self.disk_rng, torn=self.opts.torn_writes)
        n.waits.clear()
        n.batch.clear()
        n.reads = None
        n.role, n.leader = StateRole.FOLLOWER, 0
        self.inv.leading[nid] = 0
        n.incarnation += 1
        self.stats["crashes"] += 1
        self.trace.log(f"n{nid} CRASH ({why}); lost {lost} unsynced disk writes")
        self.on_crash(nid)

    def restart(self, nid: int) -> None:
        n = self.nodes[nid]
        if n.up or not n.created:
            return
        try:
            storage, rec, seqs = n.disk.restore()
        except LogGap as gap:
            raise Violation(f"n{nid}: restart after WAL release: {gap}") from None
        hs, snap = rec.hard_state, rec.snapshot
        last = rec.entries[-1].index if rec.entries else rec.applied
        if hs.commit > last:
            raise Violation(f"n{nid}: restarts with commit {hs.commit} beyond its log ({last})")
        self.inv.on_restart(nid, hs)
        self.inv.restore_chain(nid, snap, list(rec.entries))
        if snap is not None:
            n.kv = KVStore.decode(snap.data, dedup="no_dedup" not in self.opts.sim_bugs)
            n.applied = n.snap_index = snap.metadata.index
            n.conf_state = snap.metadata.conf_state
        else:
            n.kv = KVStore(dedup="no_dedup" not in self.opts.sim_bugs)
            n.applied = n.snap_index = 0
            n.conf_state = ConfState()
        n.storage = storage
        n.hs = hs
        n.raw = RawNode(self._config(nid, n.applied), storage)
        n.core = MemberCore(n.raw, storage, self._policy(), self._early(n))
        n.core.snaps.wrote(seqs)
        if snap is not None:
            n.core.snaps.installed(snap.metadata.index, len(snap.data))
        if nid in self.founders and rec.fresh:
            # As the server's recovery does: a founder that persisted nothing (it crashed
            # before its bootstrap Ready was durable) bootstraps again.
            n.raw.bootstrap(self.founders)
        n.reads = self._read_batcher(nid)
        n.up = True
        self.stats["restarts"] += 1
        self.trace.log(
            f"n{nid} RESTART term={hs.term} vote={hs.vote} commit={hs.commit} "
            f"snap={n.snap_index} last={last}"
        )
        self.loop.after(self.tick_rng.randrange(self.opts.tick_ms), self._tick, nid, n.incarnation)
        self.drive(n)

    # -- events --------------------------------------------------------------------------
    def _tick(self, nid: int, incarnation: int) -> None:
        n = self.nodes[nid]
        if not n.up or n.incarnation != incarnation or n.raw is None:
            return
        n.raw.tick()
        if n.reads is not None:
            n.reads.check(n.raw, self.loop.now)
        self.drive(n)
        self.loop.after(self.tick_period[nid], self._tick, nid, incarnation)

    def _deliver(self, msg: Message) -> None:
        n = self.nodes[msg.to]
        if n.raw is None:
            return
        if self.trace.on:
            self.trace.log(f"deliver {describe_message(msg)}")
        self.last_heard[(msg.to, msg.frm)] = self.loop.now
        n.raw.step(msg)
        self.drive(n)
        if msg.type == MessageType.SNAP:
            self.loop.after(0, self._report_snapshot, msg.frm, msg.to, True)

    def _on_drop(self, msg: Message, why: str) -> None:
        if self.trace.on:
            self.trace.log(f"drop ({why}) {describe_message(msg)}")
        if msg.type == MessageType.SNAP:
            self.loop.after(0, self._report_snapshot, msg.frm, msg.to, False)
        elif why != "lost" and msg.type in (MessageType.APP, MessageType.HEARTBEAT):
            self.loop.after(0, self._report_unreachable, msg.frm, msg.to)

    def _report_snapshot(self, frm: int, to: int, ok: bool) -> None:
        n = self.nodes[frm]
        if n.raw is not None:
            n.raw.report_snapshot(to, ok)
            self.drive(n)

    def _report_unreachable(self, frm: int, to: int) -> None:
        n = self.nodes[frm]
        if n.raw is not None:
            n.raw.report_unreachable(to)
            self.drive(n)

    # -- client entry points -----------------------------------------------------------
    def propose(self, nid: int, call: Call) -> bool:
        """Propose ``call``'s request at node ``nid``; False if refused (definitely not
        appended: node down or ``ProposalDropped``). With ``batch_ms``, proposals wait up
        to that long and go in one ``propose_many`` (a refused batch refuses each call)."""
        n = self.nodes[nid]
        if n.raw is None:
            return False
        if self.opts.batch_ms and call.client >= 0:
            if not n.batch:
                self.loop.after(self.opts.batch_ms, self._flush, nid, n.incarnation)
            n.batch.append(call)
            return True
        try:
            n.raw.propose(call.req.encode())
        except ProposalDropped:
            return False
        n.waits.proposed(call.req.id, call)
        self.drive(n)
        return True

    def _flush(self, nid: int, incarnation: int) -> None:
        n = self.nodes[nid]
        calls, n.batch = n.batch, []
        if n.raw is None or n.incarnation != incarnation or not calls:
            return  # lost with the node: never proposed, the clients time out
        try:
            n.raw.propose_many([c.req.encode() for c in calls])
        except ProposalDropped:
            for c in calls:
                self.refuse(c)
            return
        for c in calls:
            n.waits.proposed(c.req.id, c)
        self.drive(n)

    def read_index(self, nid: int, call: Call) -> bool:
        """Queue a linearizable read at node ``nid`` (batched into one ReadIndex in flight
        as the production member does); False if refused (node down or no leader known)."""
        n = self.nodes[nid]
        if n.raw is None or n.reads is None:
            return False
        if n.raw.role == StateRole.FOLLOWER and n.raw.lead == 0:
            return False
        n.reads.add(call)
        n.reads.issue(n.raw, self.loop.now)
        self.drive(n)
        return True

    def local_read(self, nid: int, call: Call) -> bool:
        """The ``stale_local_read`` bug: answer from the local state machine at once."""
        n = self.nodes[nid]
        if n.raw is None:
            return False
        self.respond(call, n.kv.read(call.req.key), 0)
        return True

    def transfer_leader(self, nid: int, to: int) -> None:
        n = self.nodes[nid]
        if n.raw is not None:
            self.trace.log(f"n{nid} transfer leadership to n{to}")
            n.raw.transfer_leader(to)
            self.drive(n)

    def propose_conf_change(self, nid: int, cc: ConfChange) -> bool:
        n = self.nodes[nid]
        if n.raw is None:
            return False
        try:
            n.raw.propose_conf_change(cc)
        except ProposalDropped:
            return False
        self.drive(n)
        return True

    # -- views ---------------------------------------------------------------------------
    def leaders(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.up and n.role == StateRole.LEADER]

    def describe_nodes(self) -> list[str]:
        out = []
        for nid in self.ids:
            n = self.nodes[nid]
            if not n.created:
                out.append(f"  n{nid}: not created")
                continue
            out.append(
                f"  n{nid}: {'up' if n.up else 'DOWN'} {n.role.name} lead={n.leader} "
                f"term={n.hs.term} vote={n.hs.vote} commit={n.hs.commit} applied={n.applied} "
                f"snap={n.snap_index} voters={n.conf_state.voters} "
                f"learners={n.conf_state.learners}"
            )
        return out
