"""Stable storage as the core sees it: a read-only ``Storage`` protocol and ``MemoryStorage``.

The core only reads storage. The driver writes to it (``append``, ``set_hard_state``,
``apply_snapshot``) after making the same data durable elsewhere (WAL, snapshot files), and
compacts it (``create_snapshot`` + ``compact``) once the state machine has a snapshot.

``MemoryStorage`` keeps a dummy entry at position 0 whose ``(term, index)`` is that of the
last compacted entry (the snapshot's). Invariants: ``ents[k].index == ents[0].index + k``;
``first_index() == ents[0].index + 1``; ``last_index() == ents[-1].index``;
``term(first_index() - 1)`` is answerable (the snapshot term).
"""

from __future__ import annotations

from typing import Protocol

from coord.raft.errors import LogCompacted, LogUnavailable, RaftError, SnapshotOutOfDate
from coord.raft.types import (
    EMPTY_SNAPSHOT,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
    limit_size,
)


class Storage(Protocol):
    """The read side of stable storage."""

    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in [lo, hi), at least one if any, limited to ``max_size`` bytes."""
        ...

    def term(self, i: int) -> int: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...


class MemoryStorage:
    """An in-memory ``Storage`` (mirror of what the driver made durable)."""

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = EMPTY_SNAPSHOT
        self._ents: list[Entry] = [Entry(0, 0)]

    # -- read side ---------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.metadata.conf_state

    def hard_state(self) -> HardState:
        return self._hard_state

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def term(self, i: int) -> int:
        offset = self._ents[0].index
        if i < offset:
            raise LogCompacted(f"index {i} compacted (first is {offset + 1})")
        if i - offset >= len(self._ents):
            raise LogUnavailable(f"index {i} beyond last {self.last_index()}")
        return self._ents[i - offset].term

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise LogCompacted(f"index {lo} compacted (first is {offset + 1})")
        if hi > self.last_index() + 1:
            raise LogUnavailable(f"entries [{lo}, {hi}) beyond last {self.last_index()}")
        if lo >= hi:
            return []
        return limit_size(self._ents[lo - offset : hi - offset], max_size)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- write side (driver only) --------------------------------------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log with ``snap`` (a snapshot received from the leader)."""
        if snap.metadata.index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDate(
                f"snapshot {snap.metadata.index} not newer than {self._snapshot.metadata.index}"
            )
        self._snapshot = snap
        self._ents = [Entry(snap.metadata.term, snap.metadata.index)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine at ``index`` (which must be applied)."""
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDate(f"snapshot at {index} not newer than the current one")
        if index > self.last_index():
            raise LogUnavailable(f"snapshot index {index} beyond last {self.last_index()}")
        self._snapshot = Snapshot(SnapshotMetadata(index, self.term(index), conf_state), data)
        return self._snapshot

    def compact(self, index: int) -> None:
        """Discard entries before ``index`` (``index`` itself becomes the dummy entry).
        The driver must not compact beyond its applied index, nor beyond the index of its
        latest snapshot: a follower that needs a compacted entry is sent ``snapshot()``,
        which must cover it."""
        offset = self._ents[0].index
        if index <= offset:
            raise LogCompacted(f"already compacted to {offset}")
        if index > self.last_index():
            raise LogUnavailable(f"compact {index} beyond last {self.last_index()}")
        k = index - offset
        self._ents = [Entry(self._ents[k].term, index), *self._ents[k + 1 :]]

    def append(self, entries: list[Entry]) -> None:
        """Append ``entries``; an entry at index i replaces every stored entry >= i."""
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        k = entries[0].index - self._ents[0].index
        if k > len(self._ents):
            raise RaftError(
                f"missing log entries: last {self.last_index()}, appending at {entries[0].index}"
            )
        del self._ents[k:]
        self._ents.extend(entries)
