"""A member's Ready handling as one synchronous, deterministic object: each Ready becomes
an ordered list of actions for the caller to perform.

:class:`MemberCore` owns the Raft core (``RawNode``) and the ``MemoryStorage`` mirror it
reads. :meth:`MemberCore.ready` takes the next Ready and returns what to do with it, in
the order the Raft contract (docs/raft.md) allows:

1. :class:`SoftState` — the leader or role changed;
2. :class:`Send` ``messages`` — they may leave before this member's own write;
3. :class:`ReadStates` — answers to ReadIndex requests (they need nothing of this
   member's own write; a read is served once the member applied its index);
4. :class:`Persist` — the snapshot, entries and hard state, in one write (fsync when
   ``must_sync``);
5. :class:`Apply` ``during_write`` — the committed entries this member already holds
   durably (``member_core.split_committed``), applied while the write is in flight;
6. — the caller waits for the write and reports it with :meth:`MemberCore.persisted`,
   which mirrors it into the storage the core reads —
7. :class:`Send` ``after_persist`` (votes, append acknowledgements);
8. :class:`InstallSnapshot`, then :class:`Apply` the rest of the committed entries;

then :meth:`MemberCore.advance`. The server (``raft_node``) performs the actions with the
real WAL writer, transport and applier; the simulator (``tests/sim``) with its simulated
disk and network, crashing between them. :func:`recover` decides, for both, what a
restarted member starts from (the entries after its snapshot, its hard state, its
applied index, whether it bootstraps) and rebuilds the mirror from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from coord.raft import (
    Entry,
    HardState,
    MemoryStorage,
    Message,
    RawNode,
    ReadState,
    Ready,
    Snapshot,
    StateRole,
)
from coord.server.member_core import EarlyCampaign, split_committed
from coord.server.member_snap import SnapshotPlan, SnapshotPolicy

__all__ = ["Action", "Apply", "CampaignedEarly", "InstallSnapshot", "LeaderLost", "LogGap",
           "MemberCore", "Persist", "ReadStates", "Recovered", "Send", "SoftState", "Timed",
           "recover", "restore_storage"]


@dataclass(frozen=True, slots=True)
class SoftState:
    """The leader or this member's role changed."""

    leader: int
    role: StateRole


@dataclass(frozen=True, slots=True)
class Send:
    """Messages to send; ``after_persist``: only once the :class:`Persist` before it is
    durable."""

    messages: Sequence[Message]
    after_persist: bool


@dataclass(frozen=True, slots=True)
class Persist:
    """One write: the snapshot (if any), then the entries, then the hard state; synced
    when ``must_sync``. Report it with :meth:`MemberCore.persisted` once done."""

    snapshot: Snapshot | None
    entries: Sequence[Entry]
    hard_state: HardState | None
    must_sync: bool


@dataclass(frozen=True, slots=True)
class Apply:
    """Committed entries to apply in order; ``during_write``: while the Ready's write is
    in flight (the member already holds them durably)."""

    entries: Sequence[Entry]
    during_write: bool


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """Restore the state machine (and membership) from the snapshot just persisted."""

    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class ReadStates:
    """ReadIndex answers: a read may be served once the member applied ``index``."""

    states: Sequence[ReadState]


@dataclass(frozen=True, slots=True)
class LeaderLost:
    """The early campaign forgot ``leader`` (its stream broke, then silence); this member
    campaigns at ``campaign_at`` unless a leader shows up first."""

    leader: int
    campaign_at: float


@dataclass(frozen=True, slots=True)
class CampaignedEarly:
    """This member campaigned early: its core has a Ready."""


Action = SoftState | Send | Persist | Apply | InstallSnapshot | ReadStates
Timed = LeaderLost | CampaignedEarly


class MemberCore:
    """The Raft core of one member and the one Ready it is handling."""

    def __init__(self, rn: RawNode, storage: MemoryStorage,
                 policy: SnapshotPolicy | None = None,
                 early: EarlyCampaign | None = None) -> None:
        self.rn = rn
        self.storage = storage
        self.early = early
        """The early campaign's timers (None: this member has none)."""
        self.snaps = SnapshotPlan(policy or SnapshotPolicy(0, 0, 0, 0))
        """When to snapshot, compact and release WAL segments (``member_snap``)."""
        self.durable_index = storage.last_index()
        """The last log index this member holds durably (what :func:`split_committed`
        may apply during a write)."""
        self.current: Ready | None = None
        """The Ready being handled (between :meth:`ready` and :meth:`advance`)."""

    def ready(self) -> list[Action] | None:
        """The next Ready as actions, or None (nothing to do, or one is outstanding)."""
        if self.current is not None or not self.rn.has_ready():
            return None
        rd = self.current = self.rn.ready()
        out: list[Action] = []
        if rd.soft_state is not None:
            out.append(SoftState(rd.soft_state.leader, rd.soft_state.role))
        if rd.messages:
            out.append(Send(rd.messages, after_persist=False))
        early, rest = split_committed(rd.committed_entries, self.durable_index, rd.entries,
                                      rd.snapshot is not None)
        if rd.read_states:
            out.append(ReadStates(rd.read_states))
        out.append(Persist(rd.snapshot, rd.entries, rd.hard_state, rd.must_sync))
        if early:
            out.append(Apply(early, during_write=True))
        if rd.messages_after_persist:
            out.append(Send(rd.messages_after_persist, after_persist=True))
        if rd.snapshot is not None:
            out.append(InstallSnapshot(rd.snapshot))
        if rest:
            out.append(Apply(rest, during_write=False))
        return out

    def persisted(self, p: Persist) -> None:
        """``p``'s write is durable: mirror it into the storage the core reads. (The
        caller may pass ``p`` with the snapshot it actually wrote.)"""
        if p.snapshot is not None:
            self.storage.apply_snapshot(p.snapshot)
            self.durable_index = p.snapshot.metadata.index
        if p.entries:
            self.storage.append(list(p.entries))
            self.durable_index = p.entries[-1].index
        if p.hard_state is not None:
            self.storage.set_hard_state(p.hard_state)

    # ------------------------------------------------------------------ timers
    def leader_stream_lost(self, peer: int, now: float) -> None:
        """The stream ``peer`` sent Raft messages on broke at ``now`` (the early campaign
        watches for silence if ``peer`` leads this member). Then call :meth:`wake` at
        :meth:`next_wake`."""
        if self.early is not None:
            self.early.stream_lost(peer, now)

    def forget_leader(self, now: float) -> None:
        """Believe the leader gone now and campaign early (unless one shows up)."""
        if self.early is not None:
            self.early.leader_gone(now)

    def next_wake(self) -> float | None:
        """When :meth:`wake` has something to do (None: no timer pending)."""
        return self.early.next_due() if self.early is not None else None

    def wake(self, now: float, last_heard: Callable[[int], float]) -> list[Timed]:
        """Act on the timers due at ``now`` (``last_heard(peer)``: when a message from
        ``peer`` last arrived); returns what happened, for the caller to log and to
        handle the Ready it may have made."""
        ec = self.early
        if ec is None:
            return []
        forgotten, campaigns = ec.forgotten, ec.campaigns
        wakes = ec.fire(now, last_heard)
        out: list[Timed] = []
        if ec.forgotten != forgotten:
            out.append(LeaderLost(ec.last_lost, min(wakes, default=now)))
        if ec.campaigns != campaigns:
            out.append(CampaignedEarly())
        return out

    def advance(self) -> None:
        """The current Ready is handled: the core may produce the next."""
        assert self.current is not None
        rd, self.current = self.current, None
        self.rn.advance(rd)


def restore_storage(storage: MemoryStorage, snapshot: Snapshot | None,
                    entries: Sequence[Entry], hard_state: HardState) -> HardState:
    """Rebuild a member's log mirror from what it persisted (the entries after the
    snapshot, in order); returns the hard state it set (its commit at least the
    snapshot's index)."""
    if snapshot is not None:
        storage.apply_snapshot(snapshot)
        if hard_state.commit < snapshot.metadata.index:
            hard_state = HardState(hard_state.term, hard_state.vote, snapshot.metadata.index)
    storage.set_hard_state(hard_state)
    storage.append(list(entries))
    return hard_state


class LogGap(Exception):
    """The log's first entry after the snapshot is not the next index: entries
    ``base + 1 .. first - 1`` are in no file."""

    def __init__(self, base: int, first: int) -> None:
        super().__init__(f"entries {base + 1}..{first - 1} are in no file")
        self.base = base
        self.first = first


@dataclass(frozen=True, slots=True)
class Recovered:
    """What a restarted member starts from."""

    snapshot: Snapshot | None
    entries: Sequence[Entry]
    """The entries after the snapshot, from ``applied + 1`` on without a gap."""
    hard_state: HardState
    """Its commit at least the snapshot's index."""
    applied: int
    """The snapshot's index (0 without one): the core re-delivers what follows."""
    fresh: bool
    """Nothing was persisted: a founder bootstraps (again)."""
    stale: int = 0
    """Entries left out: written before a snapshot from the leader replaced the log."""


def recover(storage: MemoryStorage, snapshot: Snapshot | None, entries: Sequence[Entry],
            hard_state: HardState) -> Recovered:
    """A member's start from what it persisted: ``snapshot`` (the newest usable one),
    ``entries`` (its log as last written, see ``coord.storage.records.replay``) and
    ``hard_state``; rebuilds ``storage`` (empty) from it. Entries after the snapshot of an
    older term than its own are left out (written before the snapshot replaced the log).
    Raises :class:`LogGap` (storage untouched) if the log does not reach back to the
    snapshot."""
    base = snapshot.metadata.index if snapshot is not None else 0
    after = [e for e in entries if e.index > base]
    stale = 0
    if snapshot is not None and after and after[0].term < snapshot.metadata.term:
        # Written before a snapshot from the leader replaced the whole log (the member
        # crashed before the leader's next entries replaced them): no log has an entry
        # of an older term after a newer one, and what the leader sent after the
        # snapshot starts at base + 1, so none of them is part of the log.
        stale, after = len(after), []
    if after and after[0].index != base + 1:
        raise LogGap(base, after[0].index)
    fresh = snapshot is None and not after and hard_state == HardState()
    hs = restore_storage(storage, snapshot, after, hard_state)
    return Recovered(snapshot, after, hs, base, fresh, stale)
