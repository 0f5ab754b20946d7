"""The Raft log: stable ``Storage`` plus the ``Unstable`` tail not yet handed to the driver
as persisted.

Invariants (``RaftLog``):
- ``applied <= committed <= last_index()``;
- entries with index >= ``unstable.offset`` come from ``unstable`` and shadow storage;
- a committed entry is never truncated (``append`` refuses to).
"""

from __future__ import annotations

from coord.raft.errors import LogCompacted, LogUnavailable, RaftError
from coord.raft.storage import Storage
from coord.raft.types import Entry, Snapshot, limit_size


class Unstable:
    """Entries (and possibly a snapshot) accepted by the core but not yet acknowledged as
    persisted by ``advance``. ``entries[k].index == offset + k``; with a snapshot,
    ``offset == snapshot.metadata.index + 1``."""

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.metadata.index == i:
                return self.snapshot.metadata.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].term

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``index`` were persisted, if ``index`` still has ``term`` here
        (otherwise they were replaced meanwhile and must be persisted again)."""
        t = self.maybe_term(index)
        if t is None or t != term or index < self.offset:
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == index:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.metadata.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replace the whole unstable tail; storage entries >= after are shadowed until
            # the driver persists these (an entry at i replaces persisted ones >= i).
            self.offset = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    """The node's view of its log. ``committed`` and ``applied`` are tracked here."""

    def __init__(self, storage: Storage, max_applying_size: int) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applied = first - 1
        self.max_applying_size = max_applying_size

    # -- indexes and terms -----------------------------------------------------------------
    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def term(self, i: int) -> int:
        """Term of entry ``i``; valid for [first_index() - 1, last_index()]."""
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        if i < self.first_index() - 1:
            raise LogCompacted(f"index {i} compacted")
        if i > self.last_index():
            raise LogUnavailable(f"index {i} beyond last {self.last_index()}")
        return self.storage.term(i)

    def term_or_zero(self, i: int) -> int:
        try:
            return self.term(i)
        except (LogCompacted, LogUnavailable):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, i: int, t: int) -> bool:
        try:
            return self.term(i) == t
        except (LogCompacted, LogUnavailable):
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: a candidate's log (last_term, last_index) is at least as
        up-to-date as ours."""
        lt = self.last_term()
        return last_term > lt or (last_term == lt and last_index >= self.last_index())

    # -- reading entries ---------------------------------------------------------------------
    def slice(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries [lo, hi), limited to ``max_size`` bytes (at least one)."""
        if lo < self.first_index():
            raise LogCompacted(f"index {lo} compacted")
        if hi > self.last_index() + 1:
            raise LogUnavailable(f"slice [{lo}, {hi}) beyond last {self.last_index()}")
        if lo >= hi:
            return []
        off = self.unstable.offset
        ents: list[Entry] = []
        if lo < off:
            stored_hi = min(hi, off)
            ents = self.storage.entries(lo, stored_hi, max_size)
            if len(ents) < stored_hi - lo:
                return ents
        if hi > off:
            ents = ents + self.unstable.slice(max(lo, off), hi)
        return limit_size(ents, max_size)

    def entries_from(self, lo: int, max_size: int | None = None) -> list[Entry]:
        if lo > self.last_index():
            return []
        return self.slice(lo, self.last_index() + 1, max_size)

    def all_entries(self) -> list[Entry]:
        return self.entries_from(self.first_index())

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    # -- appending ---------------------------------------------------------------------------
    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise RaftError(f"append after {after} would truncate committed {self.committed}")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: tuple[Entry, ...]) -> int:
        """Index of the first entry of ``ents`` that is not in our log (0 if all are)."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest (index', term') with index' <= index and term' <= term in our log,
        for fast backtracking. Unknown (compacted) terms are reported as 0."""
        while index > 0:
            try:
                t = self.term(index)
            except (LogCompacted, LogUnavailable):
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, ents: tuple[Entry, ...]
    ) -> int | None:
        """Follower side of APP: returns the last new index, or None if (prev_index,
        prev_term) does not match our log."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise RaftError(f"entry {ci} conflicts with committed entry {self.committed}")
            self.append(list(ents[ci - prev_index - 1 :]))
        self.commit_to(min(commit, last_new))
        return last_new

    # -- commit and apply ---------------------------------------------------------------------
    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise RaftError(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: int, term: int, allow_old_term: bool = False) -> bool:
        """Advance commit to ``index`` if that entry is of ``term`` (Raft §5.4.2: only
        entries of the leader's current term are committed by counting replicas)."""
        if index <= self.committed:
            return False
        if allow_old_term:  # BUG (Config.bugs "commit_old_term_by_count"): skips §5.4.2
            self.commit_to(index)
            return True
        if self.term_or_zero(index) == term:
            self.commit_to(index)
            return True
        return False

    def applied_to(self, index: int) -> None:
        if index > self.committed or index < self.applied:
            raise RaftError(f"applied {index} outside [{self.applied}, {self.committed}]")
        self.applied = index

    def has_next_committed(self) -> bool:
        return self.committed > self.applied and self.unstable.snapshot is None

    def next_committed(self) -> list[Entry]:
        """Committed but not yet applied entries, size-limited."""
        if not self.has_next_committed():
            return []
        return self.slice(self.applied + 1, self.committed + 1, self.max_applying_size)

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.metadata.index
        self.unstable.restore(snap)
