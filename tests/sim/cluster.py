"""N Raft cores, their disks and state machines, driven through the Ready contract.

:class:`Cluster` owns one :class:`SimNode` per node id: a ``RawNode`` over a
``MemoryStorage`` mirror of its simulated :class:`~tests.sim.disk.Disk`, and a
:class:`~tests.sim.kv.KVStore` applier. Ticks, message deliveries, proposals and
crash/restart are events on the run's :class:`~tests.sim.eventloop.EventLoop`; after each
one the touched node's Readys are handled, one at a time, as docs/raft-api.md prescribes:

1. persist snapshot, entries, hard state (disk + mirror); fsync if ``must_sync``;
2. send ``messages``, then ``messages_after_persist``;
3. apply the snapshot, then committed entries (conf changes via ``apply_conf_change``),
   answer the clients whose proposals this node made, serve ReadIndex reads;
4. ``advance()``; then maybe take a snapshot of the state machine and compact the log.

With ``disk_latency`` a Ready stays outstanding for a few virtual ms (its ``messages``
leave at once, and the committed entries the node already holds durably are applied, as
the production member decides: ``coord.server.member_core.split_committed``); meanwhile
the node keeps stepping messages, ticks and proposals, as a server with asynchronous
writes does. With ``batch_ms`` a node gathers proposals and
hands them over with one ``propose_many``.

Named crash points (:data:`~tests.sim.options.CRASH_POINTS`) sit between those steps; a
seed enables some of them, each then fires with a small probability. A crash drops the
node's volatile disk writes (or keeps a torn prefix), its pending client calls and its
in-memory state; a restart rebuilds everything from the durable image. The
:class:`~tests.sim.invariants.Invariants` hooks are called at each state change.

Clients talk to one node each; a node proposes (a follower's proposal is forwarded to the
leader by the core) and answers its client only after applying the entry itself; an
unanswered call times out and is recorded as indeterminate.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from coord.raft import (
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDropped,
    RawNode,
    ReadOnlyOption,
    Snapshot,
    StateRole,
)
from coord.raft.describe import describe_message, describe_ready
from coord.server.member_core import ReadBatcher, compact_point, snapshot_due
from coord.server.member_ready import (
    Action,
    Apply,
    InstallSnapshot,
    MemberCore,
    Persist,
    ReadStates,
    Send,
    SoftState,
)
from tests.sim.disk import Disk
from tests.sim.eventloop import EventLoop, sub_rng
from tests.sim.invariants import Invariants, Violation
from tests.sim.kv import KVStore, Request, Result
from tests.sim.network import NetOptions, Network
from tests.sim.options import SimOptions


class NodeCrashed(Exception):
    """Raised at a crash point; the driver turns it into a crash of that node."""


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
    pending: dict[int, Call] = field(default_factory=dict)  # request id -> call
    batch: list[Call] = field(default_factory=list)  # proposals waiting for propose_many
    reads: ReadBatcher[Call] | None = None  # the production member's ReadIndex batching
    read_waits: list[tuple[int, Call]] = field(default_factory=list)


Responder = Callable[[Call, Result | None, int], None]  # (call, result or None=fail, index)


class Cluster:
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
        n.core = MemberCore(n.raw, n.storage)
        n.reads = self._read_batcher(nid)
        if bootstrap:
            n.raw.bootstrap(self.founders)
        self.inv.new_node(nid)
        n.up = True
        self.trace.log(f"n{nid} start{' (bootstrap)' if bootstrap else ' (joining, empty)'}")
        self.loop.after(self.tick_rng.randrange(self.opts.tick_ms), self._tick, nid, n.incarnation)
        self.drive(n)

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
        n.pending.clear()
        n.batch.clear()
        n.reads = None
        n.read_waits.clear()
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
        storage, hs, snap = n.disk.restore()
        self.inv.on_restart(nid, hs)
        self.inv.restore_chain(nid, snap, list(n.disk.durable.entries))
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
        n.core = MemberCore(n.raw, storage)
        if nid in self.founders and snap is None and hs == HardState() and not storage.last_index():
            # As the server's recovery does: a founder that persisted nothing (it crashed
            # before its bootstrap Ready was durable) bootstraps again.
            n.raw.bootstrap(self.founders)
        n.reads = self._read_batcher(nid)
        n.up = True
        self.stats["restarts"] += 1
        self.trace.log(
            f"n{nid} RESTART term={hs.term} vote={hs.vote} commit={hs.commit} "
            f"snap={n.snap_index} last={n.disk.durable.last_index()}"
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
        n.pending[call.req.id] = call
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
            n.pending[c.req.id] = c
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

    # -- performing the member's actions -----------------------------------------------
    def drive(self, n: SimNode) -> None:
        """Perform ``n``'s Readys (as :class:`MemberCore` lists their actions) until it has
        none. With ``disk_latency`` the write stays in flight for a few virtual ms: the
        Ready's ``messages`` leave, its read states are taken and the entries the core
        lets apply during the write are applied at once, the node keeps stepping
        messages, ticks and proposals, and the rest of the actions are performed when the
        write completes."""
        while n.core is not None:
            core = n.core
            actions = core.ready()
            if actions is None:
                return
            self.stats["readys"] += 1
            if self.trace.on and core.current is not None:
                self.trace.log(f"n{n.id} ready")
                self.trace.lines.extend(describe_ready(core.current, " " * 10))
            if self.opts.disk_latency:
                if not self._run(n, self._start_write(n, actions)):
                    return
                delay = 1 + self.lat_rng.randrange(self.opts.disk_latency)
                self.loop.after(delay, self._finish_ready, n.id, n.incarnation, actions)
                return
            if not self._run(n, partial(self._perform, n, core, actions, started=False)):
                return

    def _run(self, n: SimNode, step: Callable[[], None]) -> bool:
        """Run ``step``; False if a crash point fired in it (the node is down)."""
        try:
            step()
        except NodeCrashed as e:
            self.stats["crash_points"] += 1
            self.crash(n.id, f"crash point {e}")
            return False
        return True

    def _start_write(self, n: SimNode, actions: list[Action]) -> Callable[[], None]:
        def step() -> None:
            for a in actions:
                if isinstance(a, Send) and not a.after_persist:
                    self._send(a.messages)
                elif isinstance(a, ReadStates):
                    self._read_states(n, a)
                elif isinstance(a, Apply) and a.during_write:
                    self._apply_all(n, a.entries)
                    self.stats["applied_during_write"] += len(a.entries)
            self._serve_reads(n)
        return step

    def _finish_ready(self, nid: int, incarnation: int, actions: list[Action]) -> None:
        n = self.nodes[nid]
        core = n.core
        if core is None or n.incarnation != incarnation:
            return  # crashed meanwhile: the Ready is gone with the process
        self.trace.log(f"n{nid} ready written: persist, send, apply, advance")
        if self._run(n, partial(self._perform, n, core, actions, started=True)):
            self.drive(n)

    def _cp(self, name: str) -> None:
        o = self.opts
        if not self.calm and name in o.crash_points and self.cp_rng.random() < o.crash_point_p:
            raise NodeCrashed(name)

    def _send(self, msgs: Sequence[Message]) -> None:
        for m in msgs:
            if m.to in self.nodes and self.nodes[m.to].created:
                self.net.send(m)

    def _perform(self, n: SimNode, core: MemberCore, actions: list[Action], *,
                 started: bool) -> None:
        """The actions of one Ready in order (those of the write's start already done if
        ``started``), then ``advance``. The ``ack_before_fsync`` bug sends the
        after-persist messages before the write."""
        ack_early = "ack_before_fsync" in self.opts.sim_bugs
        soft: SoftState | None = None
        for a in actions:
            if isinstance(a, SoftState):
                soft = a
            elif isinstance(a, Send):
                if a.after_persist and not ack_early:
                    self._send_after_persist(n, a.messages)
                    self._cp("after_send")
                elif not a.after_persist and not started:
                    self._send(a.messages)
            elif isinstance(a, Persist):
                self._cp("before_persist")
                if ack_early:
                    for s in actions:
                        if isinstance(s, Send) and s.after_persist:
                            self._send_after_persist(n, s.messages)
                    self._cp("after_send")
                self._persist(n, core, a, soft)
                self._cp("after_persist")
            elif isinstance(a, Apply):
                if not (a.during_write and started):
                    self._apply_all(n, a.entries)
            elif isinstance(a, InstallSnapshot):
                self._install_snapshot(n, a.snapshot)
            elif isinstance(a, ReadStates) and not started:
                self._read_states(n, a)
        self._serve_reads(n)
        self._cp("before_advance")
        core.advance()
        self._maybe_snapshot(n)

    def _persist(self, n: SimNode, core: MemberCore, p: Persist, soft: SoftState | None) -> None:
        """Write ``p`` to the simulated disk (fsync if asked), report it to the core, and
        check the invariants on the new state."""
        if p.snapshot is not None:
            n.disk.write_snapshot(p.snapshot, keep_log=False)
        if p.entries:
            n.disk.write_entries(list(p.entries))
        old_commit = n.hs.commit
        if p.hard_state is not None:
            hs = p.hard_state
            n.disk.write_hard_state(
                HardState(hs.term, 0, hs.commit) if "forget_vote" in self.opts.sim_bugs else hs
            )
            n.hs = hs
        self._cp("before_fsync")
        if p.must_sync:
            n.disk.fsync()
        core.persisted(p)
        if soft is not None and soft.leader != n.leader and n.reads is not None:
            # as the member does: a read in flight to a leader that is gone goes again
            n.reads.leader_changed()
            if soft.leader:
                n.reads.issue(core.rn, self.loop.now)
        if soft is not None and soft.role != StateRole.LEADER:
            # stepped down: the entries of this Ready may legitimately replace its log
            n.role, n.leader = soft.role, soft.leader
            self.inv.on_role(n.id, False, n.hs.term)
        self.inv.on_persist(n.id, p.snapshot, list(p.entries))
        if soft is not None and soft.role == StateRole.LEADER:
            if n.role != StateRole.LEADER:
                self.stats["elections"] += 1
                self.trace.log(f"n{n.id} LEADER term={n.hs.term}")
            n.role, n.leader = soft.role, soft.leader
            self.inv.on_role(n.id, True, n.hs.term)
        if n.hs.commit > old_commit:
            self.inv.on_commit(n.id, old_commit, n.hs.commit, n.hs.term)

    def _apply_all(self, n: SimNode, entries: Sequence[Entry]) -> None:
        assert n.raw is not None
        for e in entries:
            if len(entries) > 1:
                self._cp("mid_apply")
            self._apply(n, n.raw, e)

    def _read_states(self, n: SimNode, a: ReadStates) -> None:
        assert n.reads is not None and n.raw is not None
        for rs in a.states:
            batch = n.reads.done(rs.request_ctx)
            n.read_waits.extend((rs.index, call) for call in batch)
            if batch:
                n.reads.issue(n.raw, self.loop.now)

    def _send_after_persist(self, n: SimNode, msgs: Sequence[Message]) -> None:
        if msgs:
            self.inv.on_send_after_persist(n.id, n.hs, list(msgs))
            self._send(msgs)

    def _install_snapshot(self, n: SimNode, snap: Snapshot) -> None:
        md = snap.metadata
        if md.index <= n.applied and n.applied > 1:
            raise Violation(
                f"n{n.id}: snapshot {md.index} to apply is not newer than applied {n.applied}"
            )
        n.kv = KVStore.decode(snap.data, dedup="no_dedup" not in self.opts.sim_bugs)
        n.applied = n.snap_index = md.index
        n.conf_state = md.conf_state
        self.stats["snapshots_installed"] += 1
        # proposals this node made may now never be applied here: their clients time out

    def _apply(self, n: SimNode, raw: RawNode, e: Entry) -> None:
        if e.index != n.applied + 1:
            raise Violation(f"n{n.id}: applying index {e.index} after {n.applied} (not in order)")
        self.inv.on_apply(n.id, e)
        n.applied = e.index
        self.stats["applied"] += 1
        if e.type == EntryType.CONF_CHANGE:
            cc = ConfChange.decode(e.data)
            n.conf_state = raw.apply_conf_change(cc)
            self.stats["conf_changes"] += 1
            self.trace.log(
                f"n{n.id} applied conf change {cc.type.name} {cc.node_id} at {e.index}: "
                f"voters={n.conf_state.voters} learners={n.conf_state.learners}"
            )
        elif e.data:
            req = Request.decode(e.data)
            res = n.kv.apply(req)
            call = n.pending.pop(req.id, None)
            if call is not None:
                self.respond(call, res, e.index)

    def _serve_reads(self, n: SimNode) -> None:
        if not n.read_waits:
            return
        keep: list[tuple[int, Call]] = []
        for index, call in n.read_waits:
            if n.applied >= index:
                self.respond(call, n.kv.read(call.req.key), 0)
            else:
                keep.append((index, call))
        n.read_waits = keep

    def _maybe_snapshot(self, n: SimNode) -> None:
        # The production member's rules (coord.server.member_core), by entry count only.
        every = self.opts.snapshot_every
        if (not every or n.storage is None
                or not snapshot_due(n.applied, n.snap_index, every, 0, sys.maxsize, 0)):
            return
        snap = n.storage.create_snapshot(n.applied, n.conf_state, n.kv.encode())
        n.disk.write_snapshot(snap, keep_log=True)
        n.disk.fsync()
        n.snap_index = n.applied
        compact_to = compact_point(n.storage, n.applied, self.opts.snapshot_keep, sys.maxsize)
        if compact_to > n.storage.first_index() - 1:
            n.storage.compact(compact_to)
        self.stats["snapshots_taken"] += 1
        self.trace.log(f"n{n.id} snapshot at {n.applied}, log compacted to {compact_to}")

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
