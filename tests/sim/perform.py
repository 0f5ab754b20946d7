"""Performing the actions of each node's production member (``MemberCore``) on the
simulated disk and network: :class:`Performing` is the part of
:class:`~tests.sim.cluster.Cluster` that handles a node's Readys one at a time, as
docs/raft-api.md prescribes, and the snapshots, compactions and WAL releases the member
decides (``coord.server.member_snap``):

1. persist snapshot, entries, hard state (disk + mirror); fsync if ``must_sync``;
2. send ``messages``, then ``messages_after_persist``;
3. apply the snapshot, then committed entries (conf changes via ``apply_conf_change``),
   answer the clients whose proposals this node made, serve ReadIndex reads;
4. ``advance()``; then, when the member says so, save a snapshot of the state machine,
   compact the in-memory log and release the WAL segments the snapshot covers.

With ``disk_latency`` a Ready stays outstanding for a few virtual ms (its ``messages``
leave at once, and the committed entries the node already holds durably are applied, as
the production member decides: ``coord.server.member_core.split_committed``); meanwhile
the node keeps stepping messages, ticks and proposals, as a server with asynchronous
writes does.

Named crash points (:data:`~tests.sim.options.CRASH_POINTS`, and ``after_snapshot_save``
between a snapshot file and the WAL release) sit between those steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

from coord.raft import (
    ConfChange,
    Entry,
    EntryType,
    HardState,
    Message,
    RawNode,
    Snapshot,
    StateRole,
)
from coord.raft.describe import describe_ready
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
from tests.sim.invariants import Invariants, Violation
from tests.sim.kv import KVStore, Request

if TYPE_CHECKING:
    import random

    from tests.sim.cluster import Responder, SimNode
    from tests.sim.eventloop import EventLoop, Trace
    from tests.sim.network import Network
    from tests.sim.options import SimOptions

SNAPSHOT_CRASH_P = 0.05
"""Chance a snapshot save crashes its node at ``after_snapshot_save`` (seeds with
``snapshot_crash``)."""


class NodeCrashed(Exception):
    """Raised at a crash point; the driver turns it into a crash of that node."""


class Performing:
    opts: SimOptions
    loop: EventLoop
    trace: Trace
    inv: Invariants
    net: Network
    nodes: dict[int, SimNode]
    calm: bool
    cp_rng: random.Random
    lat_rng: random.Random
    stats: dict[str, int]
    respond: Responder

    def crash(self, nid: int, why: str) -> None:
        raise NotImplementedError

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
        self._maybe_snapshot(n, core)

    def _persist(self, n: SimNode, core: MemberCore, p: Persist, soft: SoftState | None) -> None:
        """Write ``p`` to the simulated disk (fsync if asked), report it to the core, and
        check the invariants on the new state."""
        if p.snapshot is not None:
            n.disk.write_snapshot(p.snapshot, keep_log=False)
        seqs = n.disk.write_entries(list(p.entries))
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
        core.snaps.wrote(seqs)
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
            for call in batch:
                n.waits.wait_applied(rs.index, call)
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
        if n.core is not None:
            n.core.snaps.installed(md.index, len(snap.data))
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
            call = n.waits.request_applied(req.id)
            if call is not None:
                n.waits.forget(req.id)
                self.respond(call, res, e.index)

    def _serve_reads(self, n: SimNode) -> None:
        for call in n.waits.applied(n.applied):
            self.respond(call, n.kv.read(call.req.key), 0)

    def _maybe_snapshot(self, n: SimNode, core: MemberCore) -> None:
        """Perform what the production member decides after a Ready (``member_snap``):
        a snapshot when due, then (its file durable) compaction and the WAL release."""
        take = core.snaps.due(n.applied, 0)
        if take is None:
            return
        snap = core.storage.create_snapshot(take.index, n.conf_state, n.kv.encode())
        core.snaps.started(take.index)
        n.disk.write_snapshot(snap, keep_log=True)
        n.snap_index = take.index
        self.stats["snapshots_taken"] += 1
        if (self.opts.snapshot_crash and not self.calm
                and self.cp_rng.random() < SNAPSHOT_CRASH_P):
            raise NodeCrashed("after_snapshot_save")
        compact, release = core.snaps.saved(take.index, len(snap.data), core.storage)
        if compact is not None:
            core.storage.compact(compact.index)
        n.disk.cut()
        before = release.before
        if "release_to_newest" in self.opts.sim_bugs:
            before = n.disk.next_seq - 1
        released = n.disk.release_before(before) if before else 0
        n.disk.purge()
        self.trace.log(f"n{n.id} snapshot at {take.index}, log compacted to "
                       f"{core.storage.first_index() - 1}, WAL before {release.before} "
                       f"released ({released} segments)")

