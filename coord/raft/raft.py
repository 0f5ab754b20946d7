"""The Raft state machine (one node): terms, roles, elections, replication, commit,
snapshots, membership, ReadIndex and leader transfer.

Structure (as etcd-io/raft): ``step(m)`` first applies the rules common to every role
(term comparison, vote requests), then dispatches to the role's handler held in
``self._step``; ``tick()`` calls the role's tick function held in ``self._tick``. Each
``become_*`` swaps both and resets per-term state. The handlers live in
:mod:`coord.raft.leader` and :mod:`coord.raft.follower` (candidate and follower).

Outbound messages go to two lists: ``msgs`` (may be sent at once) and
``msgs_after_append`` (APP_RESP, VOTE_RESP, PRE_VOTE_RESP and VOTE, which depend on state
that must first be durable). A node's messages to itself (the leader's acknowledgement of
its own append, a candidate's vote for itself) also go to ``msgs_after_append``; the
``RawNode`` steps them back in on ``advance()``, so a node counts itself toward a quorum
only after its own write is durable.

Invariants:
- at most one leader per term (votes are persisted before VOTE_RESP leaves);
- the leader never overwrites or deletes entries in its own log;
- ``log.committed`` only grows and only covers entries replicated on a quorum, counted
  for entries of the current term only (Raft §5.4.2);
- ``pending_conf_index``: a leader accepts a new conf change only once every earlier one
  is applied (and once an entry of its own term is committed, see ``become_leader``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from coord.raft import follower, leader
from coord.raft.config import Config, ReadOnlyOption
from coord.raft.errors import (
    LogCompacted,
    LogUnavailable,
    RaftError,
    SnapshotTemporarilyUnavailable,
)
from coord.raft.log import RaftLog
from coord.raft.progress import Progress, ProgressState
from coord.raft.quorum import VoteResult
from coord.raft.read_only import ReadOnly
from coord.raft.storage import Storage
from coord.raft.tracker import ProgressTracker
from coord.raft.types import (
    AFTER_PERSIST_MESSAGES,
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    SoftState,
    StateRole,
    entry_size,
)

#: Context of VOTE messages sent on a leader transfer: voters bypass the leader lease.
CAMPAIGN_TRANSFER = b"transfer"

MT = MessageType


def _vote_resp_type(t: MessageType) -> MessageType:
    return MT.VOTE_RESP if t == MT.VOTE else MT.PRE_VOTE_RESP


class Raft:
    """One node's consensus state. Not thread-safe; driven only through ``RawNode``."""

    def __init__(self, config: Config, storage: Storage) -> None:
        config.validate()
        self.id = config.id
        self.cfg = config
        self.rng = config.rng
        self.log = RaftLog(storage, config.max_committed_size_per_ready)
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.state = StateRole.FOLLOWER
        self.trk = ProgressTracker(config.max_inflight_msgs, config.max_inflight_bytes)
        self.msgs: list[Message] = []
        self.msgs_after_append: list[Message] = []
        self.read_states: list[ReadState] = []
        self.read_only = ReadOnly()
        self.pending_read_index: list[Message] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_tick
        self.lead_transferee = NONE
        # A TIMEOUT_NOW went out in this term: its forced votes ignore the followers' leases.
        self.timeout_now_sent = False
        self.pending_conf_index = 0
        self.bootstrap_snap: Snapshot | None = None
        self._commit_old_term = "commit_old_term_by_count" in config.bugs
        self._vote_shorter = "vote_for_shorter_log" in config.bugs
        self._step: Callable[[Message], None] = functools.partial(follower.step_follower, self)
        self._tick: Callable[[], None] = self._tick_election

        hs, cs = storage.initial_state()
        self.restore_conf(cs)
        if not hs.is_empty():
            self._load_hard_state(hs)
        if config.applied > self.log.applied:
            self.log.applied_to(config.applied)
        self.become_follower(self.term, NONE)

    # -- small accessors --------------------------------------------------------------------
    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.state)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def _load_hard_state(self, hs: HardState) -> None:
        if hs.commit > self.log.last_index():
            raise RaftError(
                f"hard state commit {hs.commit} beyond the last index {self.log.last_index()}"
            )
        # A commit below the storage snapshot is stale: the snapshot itself is committed.
        self.log.committed = max(hs.commit, self.log.committed)
        self.term = hs.term
        self.vote = hs.vote

    def promotable(self) -> bool:
        """Only a voter with no received snapshot waiting to be persisted may campaign.
        The bootstrap snapshot is the exception: its configuration is already ours, and
        our own vote still counts only once the Ready that carries it is persisted."""
        pending = self.log.unstable.snapshot
        return self.trk.is_voter(self.id) and (pending is None or pending is self.bootstrap_snap)

    # -- sending ----------------------------------------------------------------------------
    def send(self, m: Message) -> None:
        if m.term == 0 and m.type not in (MT.PROP, MT.READ_INDEX):
            # Vote requests/responses carry their own term; everything else our term.
            if m.type in (MT.VOTE, MT.VOTE_RESP, MT.PRE_VOTE, MT.PRE_VOTE_RESP):
                raise RaftError(f"term must be set on {m.type.name}")
            m = _with_term(m, self.term)
        if m.type in AFTER_PERSIST_MESSAGES:
            self.msgs_after_append.append(m)
        else:
            self.msgs.append(m)

    def _send_append(self, to: int) -> None:
        self._maybe_send_append(to, send_if_empty=True)

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        """Send an APP (or a snapshot) to ``to`` if flow control allows; True if sent."""
        pr = self.trk.progress[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        try:
            prev_term = self.log.term(prev_index)
        except (LogCompacted, LogUnavailable):
            return self._maybe_send_snapshot(to, pr)
        ents: list[Entry] = []
        if pr.state != ProgressState.REPLICATE or not pr.inflights.full():
            try:
                ents = self.log.entries_from(pr.next, self.cfg.max_size_per_msg)
            except LogCompacted:
                return self._maybe_send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self.send(
            Message(
                MT.APP, to, self.id, self.term, prev_term, prev_index, tuple(ents),
                self.log.committed,
            )
        )
        pr.sent_entries(len(ents), sum(entry_size(e) for e in ents))
        return True

    def _maybe_send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        try:
            snap = self.log.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False  # the follower stays as it is; a later append tries again
        if snap.is_empty():
            raise RaftError("need a snapshot but storage has none")
        pr.become_snapshot(snap.metadata.index)
        self.send(Message(MT.SNAP, to, self.id, self.term, snapshot=snap))
        return True

    def _send_heartbeat(self, to: int, ctx: bytes) -> None:
        # Never tell a follower a commit index beyond what it is known to have: it may not
        # have those entries yet (it could commit something it does not hold).
        commit = min(self.trk.progress[to].match, self.log.committed)
        self.send(Message(MT.HEARTBEAT, to, self.id, self.term, commit=commit, context=ctx))

    def _bcast_append(self) -> None:
        for pid in self.trk.ids():
            if pid != self.id:
                self._send_append(pid)

    def _bcast_heartbeat(self, ctx: bytes | None = None) -> None:
        if ctx is None:
            ctx = self.read_only.last_pending_ctx()
        for pid in self.trk.ids():
            if pid != self.id:
                self._send_heartbeat(pid, ctx)

    # -- role transitions -------------------------------------------------------------------
    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self.lead_transferee = NONE
        self.timeout_now_sent = False
        self.trk.reset_votes()
        last = self.log.last_index()
        for pid in self.trk.ids():
            old = self.trk.progress[pid]
            pr = Progress(last + 1, self.cfg.max_inflight_msgs, old.is_learner,
                          self.cfg.max_inflight_bytes)
            if pid == self.id:
                pr.match = last
            self.trk.progress[pid] = pr
        self.pending_conf_index = 0
        self.read_only = ReadOnly()
        self.pending_read_index = []

    def _reset_randomized_election_timeout(self) -> None:
        et = self.cfg.election_tick
        self.randomized_election_timeout = self.rng.randint(et, 2 * et - 1)

    def become_follower(self, term: int, lead: int) -> None:
        self._step = functools.partial(follower.step_follower, self)
        self._reset(term)
        self._tick = self._tick_election
        self.lead = lead
        self.state = StateRole.FOLLOWER

    def become_candidate(self) -> None:
        if self.state == StateRole.LEADER:
            raise RaftError("invalid transition leader -> candidate")
        self._step = functools.partial(follower.step_candidate, self)
        self._reset(self.term + 1)
        self._tick = self._tick_election
        self.vote = self.id
        self.state = StateRole.CANDIDATE

    def become_pre_candidate(self) -> None:
        if self.state == StateRole.LEADER:
            raise RaftError("invalid transition leader -> pre-candidate")
        # Term and vote are unchanged: a failed pre-vote leaves no trace.
        self._step = functools.partial(follower.step_candidate, self)
        self.trk.reset_votes()
        self._tick = self._tick_election
        self.lead = NONE
        self.state = StateRole.PRE_CANDIDATE

    def become_leader(self) -> None:
        if self.state == StateRole.FOLLOWER:
            raise RaftError("invalid transition follower -> leader")
        self._step = functools.partial(leader.step_leader, self)
        self._reset(self.term)
        self._tick = self._tick_heartbeat
        self.lead = self.id
        self.state = StateRole.LEADER
        pr = self.trk.progress[self.id]
        pr.become_replicate()
        pr.recent_active = True
        # The no-op entry commits everything before it (Raft §8). No conf change is
        # accepted until it is applied: this both serialises conf changes with any
        # unapplied ones from earlier terms and fixes the single-server-change bug
        # (a leader must commit an entry of its own term before changing membership).
        leader.append_entries(self, [Entry(0, 0)])
        self.pending_conf_index = self.log.last_index()

    # -- ticks ------------------------------------------------------------------------------
    def tick(self) -> None:
        self._tick()

    def _past_election_timeout(self) -> bool:
        return self.election_elapsed >= self.randomized_election_timeout

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self._past_election_timeout():
            self.election_elapsed = 0
            self.step(Message(MT.HUP, self.id, self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                self.step(Message(MT.CHECK_QUORUM, self.id, self.id))
            if self.state == StateRole.LEADER and self.lead_transferee != NONE:
                self.lead_transferee = NONE  # transfer did not finish in time: abort
        if self.state != StateRole.LEADER:
            return
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self.step(Message(MT.BEAT, self.id, self.id))

    # -- elections --------------------------------------------------------------------------
    def _has_unapplied_conf_changes(self) -> bool:
        if self.log.applied >= self.log.committed:
            return False
        try:
            ents = self.log.slice(self.log.applied + 1, self.log.committed + 1)
        except (LogCompacted, LogUnavailable):
            return False
        return any(e.type == EntryType.CONF_CHANGE for e in ents)

    def _hup(self, transfer: bool = False) -> None:
        if self.state == StateRole.LEADER or not self.promotable():
            return
        # A committed but unapplied conf change may change who the voters are; campaigning
        # under the old configuration could elect a leader the new one would not.
        if self._has_unapplied_conf_changes():
            return
        if transfer:
            self._campaign(MT.VOTE, transfer=True)
        elif self.cfg.pre_vote:
            self._campaign(MT.PRE_VOTE)
        else:
            self._campaign(MT.VOTE)

    def _campaign(self, kind: MessageType, transfer: bool = False) -> None:
        if kind == MT.PRE_VOTE:
            self.become_pre_candidate()
            term = self.term + 1
        else:
            self.become_candidate()
            term = self.term
        last_index = self.log.last_index()
        last_term = self.log.last_term()
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        for pid in sorted(self.trk.voters):
            if pid == self.id:
                # Our own vote counts only once the Ready holding it is persisted.
                self.send(Message(_vote_resp_type(kind), self.id, self.id, term=term))
                continue
            self.send(
                Message(kind, pid, self.id, term=term, log_term=last_term, index=last_index,
                        context=ctx)
            )

    def _poll(self, frm: int, granted: bool) -> VoteResult:
        self.trk.record_vote(frm, granted)
        return self.trk.tally_votes()[2]

    def forget_leader(self) -> None:
        """A follower's driver learned that its leader is gone (the leader's stream broke):
        drop it, so that this member stops ignoring other members' (pre-)votes for the rest
        of the lease. The leader's next message restores it (etcd-io/raft's ForgetLeader).

        With ``SAFE`` reads only timing changes. With ``LEASE_BASED`` reads it is a no-op:
        a leader serves reads from its lease on the promise that no other leader can be
        elected within it — forgetting the leader early would break that promise (a stale
        read from a deposed leader that does not know it yet)."""
        if self.state == StateRole.FOLLOWER and self.cfg.read_only == ReadOnlyOption.SAFE:
            self.lead = NONE

    # -- the common step --------------------------------------------------------------------
    def step(self, m: Message) -> None:
        """Handle one message (network or local). Raises ``ProposalDropped`` for proposals
        that cannot be accepted."""
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.cfg.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.cfg.election_tick
                )
                if not force and in_lease:
                    # We heard from a leader within the election timeout: this candidate
                    # is probably a disruptive rejoining node. Ignore it (no term bump).
                    return
            if m.type == MT.PRE_VOTE:
                pass  # never change our term because of a pre-vote
            elif m.type == MT.PRE_VOTE_RESP and not m.reject:
                pass  # granted pre-votes carry our own future term
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self.become_follower(m.term, m.frm)
            elif m.type == MT.VOTE and self.state != StateRole.LEADER:
                # Step up to the candidate's term but keep our election timer: Raft (§5.2)
                # restarts it only when we grant the vote (below) or hear from a leader.
                # Restarting it here would let a candidate with a stale log and a fast
                # clock keep every other node from ever campaigning when pre-vote is off.
                elapsed = self.election_elapsed
                self.become_follower(m.term, NONE)
                self.election_elapsed = elapsed
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and m.type in (
                MT.HEARTBEAT, MT.APP,
            ):
                # A stale leader (e.g. healed after a partition) would otherwise never
                # learn the new term when our own pre-votes/lease keep it from hearing
                # from us; this empty response lets it step down.
                self.send(Message(MT.APP_RESP, m.frm, self.id, self.term))
            elif m.type == MT.PRE_VOTE:
                self.send(
                    Message(MT.PRE_VOTE_RESP, m.frm, self.id, term=self.term, reject=True)
                )
            return

        if m.type == MT.HUP:
            self._hup()
        elif m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        else:
            self._step(m)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        up_to_date = self.log.is_up_to_date(m.index, m.log_term)
        if self._vote_shorter:  # BUG (Config.bugs "vote_for_shorter_log"): skips §5.4.1
            up_to_date = True
        if can_vote and up_to_date:
            self.send(Message(_vote_resp_type(m.type), m.frm, self.id, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.send(
                Message(_vote_resp_type(m.type), m.frm, self.id, term=self.term, reject=True)
            )

    # -- membership -----------------------------------------------------------------------------
    def restore_conf(self, cs: ConfState) -> None:
        self.trk = ProgressTracker(self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes)
        nxt = self.log.last_index() + 1
        for v in cs.voters:
            self.trk.add(v, nxt, learner=False)
        for lrn in cs.learners:
            self.trk.add(lrn, nxt, learner=True)
        if self.id in self.trk.progress:
            self.trk.progress[self.id].match = self.log.last_index()

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed single-member change; returns the new configuration.

        ADD_NODE adds a voter or promotes a learner; ADD_LEARNER_NODE adds a learner or
        demotes a voter; REMOVE_NODE removes either. Changes that change nothing are no-ops.
        """
        nid = cc.node_id
        trk = self.trk
        nxt = self.log.last_index() + 1
        if cc.type == ConfChangeType.ADD_NODE:
            if nid in trk.learners:
                trk.learners.discard(nid)
                trk.voters.add(nid)
                trk.progress[nid].is_learner = False
            elif nid not in trk.voters:
                trk.add(nid, nxt, learner=False)
        elif cc.type == ConfChangeType.ADD_LEARNER_NODE:
            if nid in trk.voters:
                trk.voters.discard(nid)
                trk.learners.add(nid)
                trk.progress[nid].is_learner = True
            elif nid not in trk.learners:
                trk.add(nid, nxt, learner=True)
        elif cc.type == ConfChangeType.REMOVE_NODE:
            trk.remove(nid)
        if nid == self.id and nid in trk.progress and self.state != StateRole.LEADER:
            trk.progress[nid].match = self.log.last_index()
        self._after_conf_change()
        return trk.conf_state()

    def _after_conf_change(self) -> None:
        if self.state != StateRole.LEADER:
            return
        if not self.trk.is_voter(self.id):
            # Removed (or demoted): a leader outside the configuration steps down; the
            # remaining voters elect a new leader after an election timeout.
            self.become_follower(self.term, NONE)
            return
        if self.lead_transferee != NONE and not self.trk.is_voter(self.lead_transferee):
            self.lead_transferee = NONE
        # The quorum changed: the commit index may move (e.g. after a removal).
        if leader.maybe_commit(self):
            leader.release_pending_read_index(self)
            self._bcast_append()
        else:
            for pid in self.trk.ids():
                if pid != self.id:
                    self._maybe_send_append(pid, send_if_empty=False)


def _with_term(m: Message, term: int) -> Message:
    return Message(m.type, m.to, m.frm, term, m.log_term, m.index, m.entries, m.commit,
                   m.snapshot, m.reject, m.reject_hint, m.context)
