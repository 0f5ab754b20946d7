"""The Raft state machine's handlers while a node does not lead: a candidate counting
votes (or pre-votes), a follower taking appends, heartbeats and snapshots from its
leader. Functions of the ``Raft`` they act on; ``become_follower`` /
``become_candidate`` / ``become_pre_candidate`` install the step handler."""

from __future__ import annotations

from typing import TYPE_CHECKING

from coord.raft.errors import ProposalDropped
from coord.raft.quorum import VoteResult
from coord.raft.types import (
    NONE,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    StateRole,
)

if TYPE_CHECKING:
    from coord.raft.raft import Raft

MT = MessageType


def step_candidate(r: Raft, m: Message) -> None:
    my_resp = MT.PRE_VOTE_RESP if r.state == StateRole.PRE_CANDIDATE else MT.VOTE_RESP
    t = m.type
    if t == MT.PROP:
        raise ProposalDropped("no leader (election in progress)")
    if t == MT.APP:
        r.become_follower(m.term, m.frm)
        handle_append(r, m)
    elif t == MT.HEARTBEAT:
        r.become_follower(m.term, m.frm)
        handle_heartbeat(r, m)
    elif t == MT.SNAP:
        r.become_follower(m.term, m.frm)
        handle_snapshot(r, m)
    elif t == my_resp:
        res = r._poll(m.frm, not m.reject)
        if res == VoteResult.WON:
            if r.state == StateRole.PRE_CANDIDATE:
                r._campaign(MT.VOTE)
            else:
                r.become_leader()
                r._bcast_append()
        elif res == VoteResult.LOST:
            r.become_follower(r.term, NONE)


def step_follower(r: Raft, m: Message) -> None:
    t = m.type
    if t == MT.PROP:
        if r.lead == NONE:
            raise ProposalDropped("no leader")
        r.send(_with_to(m, r.lead))
    elif t in (MT.APP, MT.HEARTBEAT, MT.SNAP):
        r.election_elapsed = 0
        r.lead = m.frm
        if t == MT.APP:
            handle_append(r, m)
        elif t == MT.HEARTBEAT:
            handle_heartbeat(r, m)
        else:
            handle_snapshot(r, m)
    elif t == MT.TRANSFER_LEADER:
        if r.lead != NONE:
            r.send(_with_to(m, r.lead))
    elif t == MT.TIMEOUT_NOW:
        r._hup(transfer=True)
    elif t == MT.READ_INDEX:
        if r.lead != NONE:
            r.send(_with_to(m, r.lead))
    elif t == MT.READ_INDEX_RESP:
        r.read_states.append(ReadState(m.index, m.context))


def handle_append(r: Raft, m: Message) -> None:
    if m.index < r.log.committed:
        r.send(Message(MT.APP_RESP, m.frm, r.id, r.term, index=r.log.committed))
        return
    last_new = r.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
    if last_new is not None:
        r.send(Message(MT.APP_RESP, m.frm, r.id, r.term, index=last_new))
        return
    # Mismatch at m.index: hint the largest (index, term) that may match, skipping
    # our entries whose term is above the leader's log_term (fast backtracking).
    hint_index = min(m.index, r.log.last_index())
    hint_index, hint_term = r.log.find_conflict_by_term(hint_index, m.log_term)
    r.send(
        Message(MT.APP_RESP, m.frm, r.id, r.term, index=m.index, reject=True,
                reject_hint=hint_index, log_term=hint_term)
    )


def handle_heartbeat(r: Raft, m: Message) -> None:
    r.log.commit_to(m.commit)
    r.send(Message(MT.HEARTBEAT_RESP, m.frm, r.id, r.term, context=m.context))


def handle_snapshot(r: Raft, m: Message) -> None:
    assert m.snapshot is not None
    if restore(r, m.snapshot):
        r.send(Message(MT.APP_RESP, m.frm, r.id, r.term, index=r.log.last_index()))
    else:
        r.send(Message(MT.APP_RESP, m.frm, r.id, r.term, index=r.log.committed))


def restore(r: Raft, snap: Snapshot) -> bool:
    """Install ``snap`` if it is ahead of our commit index; False if ignored."""
    md = snap.metadata
    if md.index <= r.log.committed:
        return False
    if r.state != StateRole.FOLLOWER:
        # Defensive: only followers install snapshots.
        r.become_follower(r.term + 1, NONE)
        return False
    if r.log.match_term(md.index, md.term):
        # We already hold the snapshot's last entry: just fast-forward the commit.
        r.log.commit_to(md.index)
        return False
    r.log.restore(snap)
    r.restore_conf(md.conf_state)
    return True


def _with_to(m: Message, to: int) -> Message:
    return Message(m.type, to, m.frm, m.term, m.log_term, m.index, m.entries, m.commit,
                   m.snapshot, m.reject, m.reject_hint, m.context)
