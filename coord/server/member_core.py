"""The decisions of a coord member, without I/O: deterministic, with time passed in.

What a member does around its Raft core that is not reading or writing — when to forget
a leader whose stream broke and campaign early, which committed entries may be applied
while a write is in flight, when to snapshot, how much log to keep behind a snapshot and
which WAL segments it frees — lives here, so that the server
(:mod:`coord.server.raft_node`, which performs the I/O) and the simulator (``tests/sim``,
which runs thousands of seeded clusters over a simulated disk and network) run the same
code. Times are in whatever unit the caller's clock uses (seconds on the server, virtual
milliseconds in the simulator); ``tick`` is one Raft tick in that unit.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from coord.raft import Entry, ProposalDropped, RawNode, Storage

T = TypeVar("T")

CONFIRM_LOSS_TICKS = 3
"""After the leader's stream breaks, a follower waits this many ticks for any message from
it before it believes the leader gone (a live leader reconnects within one or two)."""
EARLY_CAMPAIGN_TICKS = 4
"""A follower that believes its leader gone campaigns within this many ticks (a random
delay, so that two followers rarely split the vote)."""


# ---------------------------------------------------------------------- early campaign
@dataclass(frozen=True, slots=True)
class _Pending:
    due: float
    confirm: bool
    """True: confirm that ``leader`` is gone; False: campaign unless a leader appeared."""
    leader: int
    term: int
    since: float


class EarlyCampaign:
    """A follower whose leader's stream broke, and that then hears nothing from it for
    ``CONFIRM_LOSS_TICKS`` ticks (a live leader reconnects and sends a heartbeat well
    within that), believes the leader dead — a kill -9 closes its sockets at once — and
    forgets it; it campaigns after a random delay of up to ``EARLY_CAMPAIGN_TICKS`` ticks,
    unless a leader shows up first. A failover then takes well under a second instead of
    a whole election timeout. Should the leader be alive after all, the other members,
    still hearing from it, refuse the pre-vote (check-quorum's lease) and its next
    heartbeat restores it.

    The caller reports a broken stream (:meth:`stream_lost`), then calls :meth:`fire` at
    or after each time these methods return (a due time); ``active`` says whether the
    member may still campaign (not stopped, not removed)."""

    def __init__(self, rn: Callable[[], RawNode | None], tick: float, rng: random.Random,
                 active: Callable[[], bool] = lambda: True) -> None:
        self._rn = rn
        self.tick = tick
        self._rng = rng
        self._active = active
        self._pending: list[_Pending] = []
        self.forgotten = 0
        self.campaigns = 0
        self.last_lost = 0
        """The leader this member last believed gone after its stream broke."""

    def stream_lost(self, peer: int, now: float) -> float | None:
        """The stream ``peer`` sent Raft messages on broke at ``now``; returns when to
        :meth:`fire` (None: ``peer`` is not this member's leader)."""
        rn = self._rn()
        if rn is None or not self._active() or peer != rn.lead:
            return None
        due = now + CONFIRM_LOSS_TICKS * self.tick
        self._pending.append(_Pending(due, True, peer, rn.term, now))
        return due

    def leader_gone(self, now: float) -> float | None:
        """Forget the leader now and campaign within ``EARLY_CAMPAIGN_TICKS``; returns when
        to :meth:`fire` (None: nothing to do)."""
        rn = self._rn()
        if rn is None or not self._active():
            return None
        rn.forget_leader()
        self.forgotten += 1
        due = now + self._rng.uniform(0.0, EARLY_CAMPAIGN_TICKS * self.tick)
        self._pending.append(_Pending(due, False, 0, rn.term, now))
        return due

    def next_due(self) -> float | None:
        """When :meth:`fire` has something to do next (None: nothing pending)."""
        return min((p.due for p in self._pending), default=None)

    def fire(self, now: float, last_heard: Callable[[int], float]) -> list[float]:
        """Act on what is due at ``now`` (``last_heard(peer)``: when a message from
        ``peer`` last arrived); returns the new due times."""
        due, self._pending = ([p for p in self._pending if p.due <= now],
                              [p for p in self._pending if p.due > now])
        wakes: list[float] = []
        for p in due:
            rn = self._rn()
            if rn is None or not self._active() or rn.term != p.term:
                continue
            if p.confirm:
                if rn.lead != p.leader or last_heard(p.leader) > p.since:
                    continue  # a leader is back (or another one was elected)
                self.last_lost = p.leader
                at = self.leader_gone(now)
                if at is not None:
                    wakes.append(at)
            elif rn.follower_without_leader:  # else: a leader was elected meanwhile
                rn.campaign()
                self.campaigns += 1
        return wakes


# ---------------------------------------------------------------------- reads
class ReadBatcher(Generic[T]):
    """A member's linearizable reads, batched: one ReadIndex in flight at a time carries
    every read (a waiter ``T``) that arrived before it was issued; one that got no answer
    within ``timeout`` (lost with a message or a leader) is issued again, and on a leader
    change the one in flight goes back to the queue, to be issued to the new leader.
    ``live(waiter)`` says whether a waiter still wants its answer.

    A context (``member/nonce/n``) must never be reused by a restarted member: the leader
    ignores a ReadIndex whose context it still has pending (the previous process's, not
    yet confirmed) and answers the old request with the read index it fixed back then,
    which the new process would take for the answer to its own read — a stale read. So
    ``nonce`` differs per process (random on the server, the incarnation in the
    simulator)."""

    def __init__(self, member_id: int, timeout: float,
                 live: Callable[[T], bool] = lambda _: True, *, nonce: int) -> None:
        self._prefix = f"{member_id:x}/{nonce:x}/"
        self.timeout = timeout
        self._live = live
        self._ctx = itertools.count(1)
        self.waiting: list[T] = []
        self.inflight: tuple[bytes, list[T], float] | None = None

    def add(self, waiter: T) -> None:
        self.waiting.append(waiter)

    def issue(self, rn: RawNode | None, now: float) -> bool:
        """Issue a ReadIndex for the waiting reads unless one is in flight; True if one
        was issued (the core has a message to send)."""
        if self.inflight is not None or not self.waiting or rn is None:
            return False
        self.waiting = [w for w in self.waiting if self._live(w)]
        if not self.waiting:
            return False
        ctx = f"{self._prefix}{next(self._ctx)}".encode()
        batch, self.waiting = self.waiting, []
        try:
            rn.read_index(ctx)
        except ProposalDropped:
            self.waiting[:0] = batch  # issued again when a leader is known
            return False
        self.inflight = (ctx, batch, now)
        return True

    def done(self, ctx: bytes) -> list[T]:
        """The waiters the ReadIndex ``ctx`` answered (none if it is not the one in
        flight: an answer to one given up on)."""
        if self.inflight is None or self.inflight[0] != ctx:
            return []
        batch = self.inflight[1]
        self.inflight = None
        return batch

    def check(self, rn: RawNode | None, now: float) -> bool:
        """Each tick: give up on a ReadIndex unanswered for ``timeout`` and issue the
        waiting reads; True if one was issued."""
        if self.inflight is not None and now - self.inflight[2] > self.timeout:
            self.waiting[:0] = self.inflight[1]
            self.inflight = None
        return self.issue(rn, now)

    def leader_changed(self) -> None:
        """The ReadIndex in flight went to a leader that is gone: queue its reads again."""
        if self.inflight is not None:
            self.waiting[:0] = self.inflight[1]
            self.inflight = None

    def drain(self) -> list[T]:
        """Every waiter, waiting or in flight (the member is stopping)."""
        out = self.waiting + (self.inflight[1] if self.inflight is not None else [])
        self.waiting, self.inflight = [], None
        return out


# ---------------------------------------------------------------------- Ready handling
def split_committed(committed: Sequence[Entry], durable_index: int,
                    new_entries: Sequence[Entry], with_snapshot: bool,
                    ) -> tuple[Sequence[Entry], Sequence[Entry]]:
    """The committed entries of a Ready that may be applied while its write is in flight
    (this member already holds them durably: the leader answers its clients without
    waiting for the fsync of the proposals that arrived since), and the rest, applied
    after it."""
    if with_snapshot or not committed:
        return (), committed
    limit = durable_index
    if new_entries:
        limit = min(limit, new_entries[0].index - 1)
    k = 0
    while k < len(committed) and committed[k].index <= limit:
        k += 1
    return committed[:k], committed[k:]


# ---------------------------------------------------------------------- snapshots
def snapshot_due(applied: int, snap_index: int, count: int, unsnapped_bytes: int,
                 max_bytes: int, last_size: int) -> bool:
    """Snapshot every ``count`` applied entries, or sooner once the entries applied since
    the last snapshot hold ``max_bytes`` — or as many bytes as that snapshot had, if more:
    the log in memory stays about the size of the data, and a snapshot (which writes the
    whole store) is written at most once per its own size of new entries."""
    return applied - snap_index >= count or unsnapped_bytes >= max(max_bytes, last_size)


def compact_point(storage: Storage, index: int, keep: int, budget: int) -> int:
    """Where to compact the in-memory log after a snapshot at ``index``: keep up to
    ``keep`` entries behind it for followers slightly behind (they then need no
    snapshot), but no more than ``budget`` bytes of them — the entries of large txns would
    otherwise keep tens of MB of values a second time."""
    lo = max(storage.first_index(), index - keep + 1)
    kept = used = 0
    for e in reversed(storage.entries(lo, index + 1)):
        used += len(e.data)
        if used > budget:
            break
        kept += 1
    return index - kept


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
