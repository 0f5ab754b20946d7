"""``RawNode``: the driver-facing API around ``Raft`` and the Ready/advance contract.

Usage (see docs/raft-api.md): feed ``tick()``, ``step(msg)`` and proposals; when
``has_ready()``, take ``ready()``, persist its snapshot, entries and hard state, send its
``messages`` (allowed before persisting) and ``messages_after_persist`` (only after),
apply the snapshot and ``committed_entries`` (``apply_conf_change`` for CONF_CHANGE entries),
then ``advance(ready)``.

Invariants:
- at most one Ready is outstanding: ``has_ready()`` is False and ``ready()`` raises until
  the previous one is advanced;
- messages a node addresses to itself (its own append acknowledgement, its own vote) are
  withheld from the Ready and stepped in by ``advance()``: the node counts itself toward a
  quorum only once its write is durable.

Bootstrap: a fresh cluster is started by calling ``bootstrap(peers)`` on each member's
RawNode over empty storage. It installs, through the first Ready, a snapshot at index 1,
term 1 whose ConfState lists ``peers`` as voters (the same on every member, so their logs
agree from the start). ``campaign()`` may follow at once. A node that joins later starts
over empty storage without bootstrap: it has no configuration, cannot campaign, and
receives a snapshot or entries from the leader once the leader applied its ADD_NODE /
ADD_LEARNER_NODE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from coord.raft.config import Config
from coord.raft.errors import ProposalDropped, RaftError, StepLocalMessage
from coord.raft.progress import ProgressState
from coord.raft.raft import Raft
from coord.raft.storage import Storage
from coord.raft.types import (
    LOCAL_MESSAGES,
    NONE,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    Snapshot,
    SnapshotMetadata,
    SoftState,
    StateRole,
)


@dataclass(frozen=True, slots=True)
class ProgressView:
    """A read-only copy of the leader's view of one member."""

    match: int
    next: int
    state: ProgressState
    is_learner: bool = False
    paused: bool = False
    pending_snapshot: int = 0
    recent_active: bool = False


@dataclass(frozen=True, slots=True)
class Status:
    id: int
    hard_state: HardState
    soft_state: SoftState
    applied: int
    conf_state: ConfState = field(default_factory=ConfState)
    lead_transferee: int = 0
    progress: dict[int, ProgressView] = field(default_factory=dict)


class RawNode:
    """Thread-unsafe driver API of one Raft node."""

    def __init__(self, config: Config, storage: Storage) -> None:
        self._raft = Raft(config, storage)
        self._prev_soft = self._raft.soft_state()
        self._prev_hard = self._raft.hard_state()
        self._outstanding: Ready | None = None
        self._steps_on_advance: list[Message] = []

    # -- inputs ------------------------------------------------------------------------------
    def bootstrap(self, peers: list[int]) -> None:
        """Start a brand-new cluster whose voters are ``peers`` (call on every member)."""
        r = self._raft
        if r.log.last_index() != 0 or not r.hard_state().is_empty():
            raise RaftError("bootstrap needs empty storage")
        if not peers:
            raise RaftError("bootstrap needs at least one peer")
        cs = ConfState(tuple(sorted(set(peers))), ())
        snap = Snapshot(SnapshotMetadata(1, 1, cs))
        r.become_follower(1, 0)
        r.log.restore(snap)
        r.restore_conf(cs)
        r.bootstrap_snap = snap

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self._raft.tick()

    def campaign(self) -> None:
        """Start an election now (a pre-vote first if enabled)."""
        self._raft.step(Message(MessageType.HUP, self._raft.id, self._raft.id))

    def forget_leader(self) -> None:
        """Forget a follower's leader (see ``Raft.forget_leader``); a no-op otherwise."""
        self._raft.forget_leader()

    @property
    def follower_without_leader(self) -> bool:
        """A follower that knows no leader (the moment to campaign early, see RaftNode)."""
        r = self._raft
        return r.state == StateRole.FOLLOWER and r.lead == NONE

    # -- state the driver reads ----------------------------------------------------------
    @property
    def id(self) -> int:
        return self._raft.id

    @property
    def lead(self) -> int:
        """The leader this node knows (0: none)."""
        return self._raft.lead

    @property
    def term(self) -> int:
        return self._raft.term

    @property
    def role(self) -> StateRole:
        return self._raft.state

    @property
    def committed(self) -> int:
        """The commit index this node knows."""
        return self._raft.log.committed

    def last_index(self) -> int:
        """The index of the last entry in this node's log (stable or not)."""
        return self._raft.log.last_index()

    def term_at(self, index: int) -> int:
        """The term of the entry at ``index`` (0 if compacted away or beyond the log)."""
        return self._raft.log.term_or_zero(index)

    def sole_voter_read(self) -> tuple[int, bool] | None:
        """On the leader of a one-voter configuration (which commits alone): its commit
        index and whether that entry is of its own term (then the commit index is a
        linearizable read point without a round of messages); None elsewhere."""
        r = self._raft
        if r.state != StateRole.LEADER or not r.trk.is_singleton() or r.id not in r.trk.voters:
            return None
        c = r.log.committed
        return c, r.log.term_or_zero(c) == r.term

    def propose(self, data: bytes) -> None:
        """Propose a normal entry. Raises ``ProposalDropped`` if it cannot be accepted now."""
        r = self._raft
        r.step(Message(MessageType.PROP, r.id, r.id, entries=(Entry(0, 0, data=data),)))

    def propose_many(self, datas: Sequence[bytes]) -> None:
        """Propose several normal entries as one message: they are appended together and
        replicated in the same APPs (cheaper than one ``propose`` per entry)."""
        if not datas:
            return
        r = self._raft
        ents = tuple(Entry(0, 0, data=d) for d in datas)
        r.step(Message(MessageType.PROP, r.id, r.id, entries=ents))

    def propose_conf_change(self, cc: ConfChange) -> None:
        """Propose a single-member change; ``ProposalDropped`` while another is unapplied."""
        r = self._raft
        e = Entry(0, 0, EntryType.CONF_CHANGE, cc.encode())
        r.step(Message(MessageType.PROP, r.id, r.id, entries=(e,)))

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed conf change (call while applying its entry)."""
        return self._raft.apply_conf_change(cc)

    def read_index(self, ctx: bytes) -> None:
        """Request a linearizable read point; the answer is a ``ReadState`` with ``ctx`` in a
        later Ready. ``ctx`` must be non-empty and unique among pending requests."""
        if not ctx:
            raise ValueError("read_index needs a non-empty context")
        r = self._raft
        if r.state == StateRole.FOLLOWER and r.lead == 0:
            raise ProposalDropped("no leader to serve the read")
        r.step(Message(MessageType.READ_INDEX, r.id, r.id, context=ctx))

    def transfer_leader(self, to: int) -> None:
        """Ask the leader to hand leadership to ``to`` (aborted after an election timeout)."""
        r = self._raft
        r.step(Message(MessageType.TRANSFER_LEADER, r.id, to))

    def step(self, msg: Message) -> None:
        """Feed a message received from a peer. Proposals forwarded by peers that cannot
        be accepted are dropped silently (the proposer times out and retries)."""
        if msg.type in LOCAL_MESSAGES:
            raise StepLocalMessage(f"{msg.type.name} may not come from the network")
        try:
            self._raft.step(msg)
        except ProposalDropped:
            # Even a proposal that originated here can come back over the network (bounced
            # by a peer that lost leadership); the driver's own proposals use propose().
            return

    def report_unreachable(self, node_id: int) -> None:
        """The transport failed to deliver a message to ``node_id``."""
        r = self._raft
        r.step(Message(MessageType.UNREACHABLE, r.id, node_id))

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        """The transport finished (or failed) sending a snapshot to ``node_id``."""
        r = self._raft
        r.step(Message(MessageType.SNAP_STATUS, r.id, node_id, reject=not ok))

    # -- outputs ---------------------------------------------------------------------------
    def has_ready(self) -> bool:
        if self._outstanding is not None:
            return False
        r = self._raft
        ps, ph = self._prev_soft, self._prev_hard
        if r.lead != ps.leader or r.state != ps.role:
            return True
        if (r.term, r.vote, r.log.committed) != (ph.term, ph.vote, ph.commit) and (
            r.term or r.vote or r.log.committed
        ):
            return True
        u = r.log.unstable
        return bool(
            u.snapshot is not None or u.entries or r.msgs or r.msgs_after_append
            or r.read_states or r.log.has_next_committed()
        )

    def ready(self) -> Ready:
        if self._outstanding is not None:
            raise RaftError("advance() the previous Ready first")
        r = self._raft
        ss = r.soft_state()
        hs = r.hard_state()
        u = r.log.unstable
        rd = Ready(
            soft_state=ss if ss != self._prev_soft else None,
            hard_state=hs if hs != self._prev_hard and not hs.is_empty() else None,
            entries=list(u.entries),
            snapshot=u.snapshot,
            committed_entries=r.log.next_committed(),
            messages=r.msgs,
            messages_after_persist=[m for m in r.msgs_after_append if m.to != r.id],
            read_states=r.read_states,
        )
        rd.must_sync = bool(
            rd.entries
            or rd.snapshot is not None
            or hs.term != self._prev_hard.term
            or hs.vote != self._prev_hard.vote
        )
        self._steps_on_advance = [m for m in r.msgs_after_append if m.to == r.id]
        r.msgs = []
        r.msgs_after_append = []
        r.read_states = []
        self._prev_soft = ss
        if rd.hard_state is not None:
            self._prev_hard = hs
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """Acknowledge that ``rd`` was persisted, sent and applied."""
        if rd is not self._outstanding:
            raise RaftError("advance() must be given the outstanding Ready")
        self._outstanding = None
        log = self._raft.log
        if rd.snapshot is not None:
            log.unstable.stable_snap_to(rd.snapshot.metadata.index)
            log.applied = max(log.applied, rd.snapshot.metadata.index)
        if rd.entries:
            last = rd.entries[-1]
            log.unstable.stable_to(last.index, last.term)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
        steps, self._steps_on_advance = self._steps_on_advance, []
        for m in steps:
            self._raft.step(m)

    def status(self) -> Status:
        r = self._raft
        progress: dict[int, ProgressView] = {}
        if r.state == StateRole.LEADER:
            for pid, pr in sorted(r.trk.progress.items()):
                progress[pid] = ProgressView(
                    pr.match, pr.next, pr.state, pr.is_learner, pr.is_paused(),
                    pr.pending_snapshot, pr.recent_active,
                )
        return Status(
            r.id, r.hard_state(), r.soft_state(), r.log.applied, r.trk.conf_state(),
            r.lead_transferee, progress,
        )
