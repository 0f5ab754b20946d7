"""Peer intake: the bounds every message from the peer port must respect before it
reaches the core (see ``Transport.check``)."""

from __future__ import annotations

from coord.pb import raft_pb2
from coord.raft import Message
from coord.raft.types import LOCAL_MESSAGES
from coord.server.transport_codec import message_from_pb

MAX_TERM = 1 << 62
"""The largest term a peer message may carry at all: it keeps ``term + 1`` (and every sum of
terms the core makes) far from the uint64 the wire and the WAL use — one heartbeat at term
2^64-1 used to overflow ``message_to_pb`` on every member and brick the cluster."""
MAX_TERM_STEP = 1 << 20
"""How far above this member's own term a peer message's term may be. With pre-vote, terms
rise only by real elections, one at a time, so no honest peer is a million elections ahead.
An absolute cap alone is a trap: a forged message at exactly the cap was adopted, and then
no member could ever campaign past it (a one-packet, permanent loss of leadership). With
the step, a forger climbs at most 2^20 per accepted message, and the cluster can always
elect at the term it was pushed to. A member left leaderless for several election
timeouts accepts any term up to MAX_TERM again, so one that the others moved more than a
step past (they adopted a forged term it never saw) rejoins instead of being stranded."""
MAX_INDEX = 1 << 62
"""The largest log index (or commit) a peer message may carry (2^62: ~1.5 million years of
100,000 entries a second), for the same reason."""
REJECT_LOG_INTERVAL = 10.0
"""Refused peer batches are counted always and logged at most once per this many seconds
per (reason, sender)."""


class PeerRejected(Exception):
    """A peer batch refused before it reaches the core; ``str()`` is the reason sent back
    (etcd's rafthttp answers 412 "cluster ID mismatch" / 403 for a removed member) and
    ``kind`` the counter it is counted under."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(detail or kind)
        self.kind = kind


def check_message(p: raft_pb2.RaftMessage, frm: int, member_id: int, term_bound: int) -> Message:
    """``p`` decoded, if it may come from member ``frm`` to ``member_id`` (a member whose
    current bound on peer terms is ``term_bound``); else raises :class:`PeerRejected`."""
    # Decode first: the checks then read Python ints, not protobuf fields (half the cost).
    try:
        m = message_from_pb(p)
    except ValueError:
        raise PeerRejected("bad type", f"unknown message or entry type in a {p.type} "
                           "message") from None
    if m.frm != frm:
        raise PeerRejected("bad from", "a message's from differs from the batch's")
    if m.to != member_id:
        raise PeerRejected("bad to", f"message to {m.to:x}, not to this member")
    if m.type in LOCAL_MESSAGES:
        raise PeerRejected("local type", f"local message type {m.type.name} from the network")
    if m.term > MAX_TERM or m.log_term > MAX_TERM:
        raise PeerRejected("bad term", f"term above {MAX_TERM}")
    if m.term > term_bound:
        raise PeerRejected("bad term", f"term {m.term} is above this member's bound "
                           f"{term_bound} (its term + {MAX_TERM_STEP})")
    if m.index > MAX_INDEX or m.commit > MAX_INDEX or m.reject_hint > MAX_INDEX:
        raise PeerRejected("bad index", f"index above {MAX_INDEX}")
    for e in m.entries:
        if e.term > MAX_TERM or e.index > MAX_INDEX:
            raise PeerRejected("bad entry", "entry with an out-of-range term or index")
    snap = m.snapshot
    if snap is not None and (snap.metadata.term > MAX_TERM
                             or snap.metadata.index > MAX_INDEX):
        raise PeerRejected("bad snapshot", "snapshot with an out-of-range term or index")
    return m
