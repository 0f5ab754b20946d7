"""The leader's view of one follower: ``Progress`` (match/next and flow-control state) and
the ``Inflights`` window.

States (etcd-io/raft design.md):
- PROBE: we do not know the follower's last matching index; send at most one APP per
  heartbeat interval (``paused`` after each) until it answers.
- REPLICATE: optimistic pipelining; ``next`` advances as APPs are sent, bounded by the
  ``Inflights`` window.
- SNAPSHOT: a snapshot is on its way; send nothing until it is acknowledged or reported.

Invariant: ``match < next``.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """A window of APPs sent but not yet acknowledged, as (last index, bytes) pairs in
    increasing index order. Full when ``max_count`` messages (or ``max_bytes``, if set)
    are outstanding."""

    __slots__ = ("_q", "bytes", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int = 0) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._q: deque[tuple[int, int]] = deque()
        self.bytes = 0

    def add(self, index: int, size: int) -> None:
        if self.full():
            raise OverflowError("cannot add to a full inflights window")
        self._q.append((index, size))
        self.bytes += size

    def free_le(self, index: int) -> None:
        """Release every message whose last index is <= ``index``."""
        q = self._q
        while q and q[0][0] <= index:
            self.bytes -= q.popleft()[1]

    def full(self) -> bool:
        return len(self._q) >= self.max_count or (
            self.max_bytes > 0 and self.bytes >= self.max_bytes
        )

    def count(self) -> int:
        return len(self._q)

    def reset(self) -> None:
        self._q.clear()
        self.bytes = 0


class Progress:
    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "msg_app_paused",
        "next",
        "pending_snapshot",
        "recent_active",
        "state",
    )

    def __init__(
        self, next_index: int, max_inflight: int, is_learner: bool = False,
        max_inflight_bytes: int = 0,
    ) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.msg_app_paused = False
        self.pending_snapshot = 0
        self.recent_active = False
        self.is_learner = is_learner
        self.inflights = Inflights(max_inflight, max_inflight_bytes)

    def _reset_state(self, state: ProgressState) -> None:
        self.msg_app_paused = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def sent_entries(self, count: int, size: int) -> None:
        """Record that an APP with ``count`` entries (``size`` bytes) was sent at ``next``."""
        if self.state == ProgressState.REPLICATE:
            if count > 0:
                self.next += count
                self.inflights.add(self.next - 1, size)
            self.msg_app_paused = self.inflights.full()
        elif self.state == ProgressState.PROBE and count > 0:
            self.msg_app_paused = True

    def maybe_update(self, n: int) -> bool:
        """An APP_RESP acknowledged ``n``; True if ``match`` grew."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.msg_app_paused = False
        self.next = max(self.next, n + 1)
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """An APP at ``rejected`` was refused with hint ``match_hint``; False if stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.msg_app_paused = False
        return True

    def is_paused(self) -> bool:
        """PROBE: one APP per heartbeat interval. REPLICATE: paused once the window is full,
        but a heartbeat response unpauses it for one (empty) APP, so a window filled by
        APPs that were all lost still recovers. SNAPSHOT: always."""
        if self.state == ProgressState.SNAPSHOT:
            return True
        return self.msg_app_paused

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.name} match={self.match} next={self.next}"
            f"{' learner' if self.is_learner else ''}"
            f"{' paused' if self.is_paused() else ''}"
            f"{f' pending_snap={self.pending_snapshot}' if self.pending_snapshot else ''})"
        )
