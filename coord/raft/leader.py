"""The leader's part of the Raft state machine (``Raft``'s handlers while it leads):
proposals, replication and commit, append responses, ReadIndex (safe and lease-based)
and leader transfer. Functions of the ``Raft`` they act on; ``Raft`` installs
``step_leader`` as its step handler on ``become_leader``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from coord.raft.config import ReadOnlyOption
from coord.raft.errors import ProposalDropped, RaftError
from coord.raft.progress import Progress, ProgressState
from coord.raft.quorum import VoteResult, vote_result
from coord.raft.types import (
    NONE,
    Entry,
    EntryType,
    Message,
    MessageType,
    ReadState,
)

if TYPE_CHECKING:
    from coord.raft.raft import Raft

MT = MessageType


def append_entries(r: Raft, es: list[Entry]) -> None:
    li = r.log.last_index()
    ents = [Entry(r.term, li + 1 + i, e.type, e.data) for i, e in enumerate(es)]
    li = r.log.append(ents)
    # Self-acknowledgement, delivered back on advance() once persisted.
    r.send(Message(MT.APP_RESP, r.id, r.id, r.term, index=li))


def maybe_commit(r: Raft) -> bool:
    return r.log.maybe_commit(r.trk.committed(), r.term, r._commit_old_term)


def committed_entry_in_current_term(r: Raft) -> bool:
    return r.log.term_or_zero(r.log.committed) == r.term


def step_leader(r: Raft, m: Message) -> None:
    t = m.type
    if t == MT.BEAT:
        r._bcast_heartbeat()
        return
    if t == MT.CHECK_QUORUM:
        if not r.trk.quorum_active():
            r.become_follower(r.term, NONE)
        for pid, other in r.trk.progress.items():
            if pid != r.id:
                other.recent_active = False
        return
    if t == MT.PROP:
        leader_propose(r, m)
        return
    if t == MT.READ_INDEX:
        leader_read_index(r, m)
        return

    pr = r.trk.progress.get(m.frm)
    if pr is None:
        return
    if t == MT.APP_RESP:
        handle_append_response(r, m, pr)
    elif t == MT.HEARTBEAT_RESP:
        pr.recent_active = True
        pr.msg_app_paused = False
        if pr.match < r.log.last_index() or pr.state == ProgressState.PROBE:
            r._send_append(m.frm)
        if not m.context:  # confirms no read (a lease read's fallback uses them too)
            return
        acks = r.read_only.recv_ack(m.frm, m.context)
        if acks is None or not quorum_acked(r, acks):
            return
        for rs in r.read_only.advance(m.context):
            respond_read_index(r, rs.req, rs.index)
    elif t == MT.SNAP_STATUS:
        if pr.state != ProgressState.SNAPSHOT:
            return
        if m.reject:
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for the follower's APP_RESP (success) or a heartbeat interval (failure)
        # before the next APP.
        pr.msg_app_paused = True
    elif t == MT.UNREACHABLE:
        # An APP was probably lost: stop pipelining and probe again.
        if pr.state == ProgressState.REPLICATE:
            pr.become_probe()
    elif t == MT.TRANSFER_LEADER:
        handle_transfer_leader(r, m, pr)


def quorum_acked(r: Raft, acks: dict[int, bool]) -> bool:
    return vote_result(r.trk.voters, acks) == VoteResult.WON


def leader_propose(r: Raft, m: Message) -> None:
    if not m.entries:
        raise RaftError("empty proposal")
    if r.id not in r.trk.progress:
        raise ProposalDropped("this leader was removed from the configuration")
    if r.lead_transferee != NONE:
        raise ProposalDropped(f"leadership is being transferred to {r.lead_transferee}")
    ents = list(m.entries)
    for i, e in enumerate(ents):
        if e.type != EntryType.CONF_CHANGE:
            continue
        if r.pending_conf_index > r.log.applied:
            raise ProposalDropped(
                f"a conf change is pending (index {r.pending_conf_index}, applied "
                f"{r.log.applied})"
            )
        if any(x.type == EntryType.CONF_CHANGE for x in ents[i + 1 :]):
            raise ProposalDropped("one conf change at a time")
        r.pending_conf_index = r.log.last_index() + i + 1
    append_entries(r, ents)
    r._bcast_append()


def leader_read_index(r: Raft, m: Message) -> None:
    if not committed_entry_in_current_term(r):
        # Our commit index may lag the true one until our no-op commits (§6.4). This
        # holds for a single voter too: a commit index that was never made durable
        # (only entries must be fsync'd) restarts lower than a write already answered.
        r.pending_read_index.append(m)
        return
    send_read_index_response(r, m)


def send_read_index_response(r: Raft, m: Message) -> None:
    if r.trk.is_singleton():  # the quorum is us: nobody to confirm leadership with
        respond_read_index(r, m, r.log.committed)
        return
    if r.cfg.read_only == ReadOnlyOption.LEASE_BASED and in_lease(r):
        respond_read_index(r, m, r.log.committed)
        return
    r.read_only.add_request(r.log.committed, m)
    r.read_only.recv_ack(r.id, m.context)
    r._bcast_heartbeat(m.context)


def in_lease(r: Raft) -> bool:
    """Whether a LEASE_BASED read may be answered from the lease, without a heartbeat
    round; if not, it takes the SAFE path.

    etcd-io/raft answers every lease read while it is leader, relying on check-quorum
    to step it down within an election timeout of losing its quorum. But the check
    runs once per election timeout and counts contacts since the previous check, so an
    isolated leader can last almost two timeouts — longer when a leader transfer
    restarts the count — while the others elect a leader after one (tests/sim/FINDINGS.md
    F4; etcd-io/raft#166). So: a quorum must have been heard from since the last
    check (less than an election timeout ago), and no leader transfer may be under
    way or have sent its TIMEOUT_NOW in this term: a transfer's forced votes ignore
    the followers' leases. What remains assumed, as for every lease: bounded clock
    drift and message delay."""
    return (r.trk.quorum_active() and r.lead_transferee == NONE
            and not r.timeout_now_sent)


def release_pending_read_index(r: Raft) -> None:
    if not r.pending_read_index or not committed_entry_in_current_term(r):
        return
    pending, r.pending_read_index = r.pending_read_index, []
    for m in pending:
        send_read_index_response(r, m)


def respond_read_index(r: Raft, req: Message, index: int) -> None:
    if req.frm in (NONE, r.id):
        r.read_states.append(ReadState(index, req.context))
    else:
        r.send(Message(MT.READ_INDEX_RESP, req.frm, r.id, r.term, index=index,
                          context=req.context))


def handle_append_response(r: Raft, m: Message, pr: Progress) -> None:
    pr.recent_active = True
    if m.reject:
        next_probe = m.reject_hint
        if m.log_term > 0:
            next_probe, _ = r.log.find_conflict_by_term(m.reject_hint, m.log_term)
        if pr.maybe_decr_to(m.index, next_probe):
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
            r._send_append(m.frm)
        return
    old_paused = pr.is_paused()
    if not (pr.maybe_update(m.index) or (
        pr.match == m.index and pr.state == ProgressState.PROBE
    )):
        return
    if pr.state == ProgressState.PROBE:
        pr.become_replicate()
    elif pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= r.log.first_index():
        pr.become_probe()
        pr.become_replicate()
    elif pr.state == ProgressState.REPLICATE:
        pr.inflights.free_le(m.index)
    if maybe_commit(r):
        release_pending_read_index(r)
        r._bcast_append()
    elif old_paused and m.frm != r.id:
        r._send_append(m.frm)
    if m.frm != r.id:
        while r._maybe_send_append(m.frm, send_if_empty=False):
            pass
    if m.frm == r.lead_transferee and pr.match == r.log.last_index():
        send_timeout_now(r, m.frm)


def handle_transfer_leader(r: Raft, m: Message, pr: Progress) -> None:
    transferee = m.frm
    if pr.is_learner:
        return
    if r.lead_transferee != NONE:
        if r.lead_transferee == transferee:
            return
        r.lead_transferee = NONE
    if transferee == r.id:
        return
    # The transfer must finish within one election timeout.
    r.election_elapsed = 0
    r.lead_transferee = transferee
    if pr.match == r.log.last_index():
        send_timeout_now(r, transferee)
    else:
        r._send_append(transferee)


def send_timeout_now(r: Raft, transferee: int) -> None:
    r.timeout_now_sent = True
    r.send(Message(MT.TIMEOUT_NOW, transferee, r.id, r.term))
