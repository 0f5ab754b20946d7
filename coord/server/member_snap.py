"""When a member snapshots, how far it compacts its in-memory log and which WAL segments it
lets go — decided without I/O, as actions, for the server (``snapshotter``) and the
simulator (``tests/sim``) to perform.

The flow, one snapshot at a time:

1. after each Ready, :meth:`SnapshotPlan.due` returns :class:`TakeSnapshot` once enough was
   applied since the last snapshot (``member_core.snapshot_due``);
2. the caller captures the state at that index and calls :meth:`SnapshotPlan.started`:
   from then on the snapshot counts as taken (no second one is due for the same entries),
   and the WAL release point is fixed (``member_core.wal_release_point``: the record of
   the entry after the snapshot, when its write is known);
3. once the snapshot file is durable, :meth:`SnapshotPlan.saved` returns
   :class:`Compact` (the in-memory log, keeping a few entries for followers slightly
   behind) and :class:`ReleaseWal` (start a new segment, drop the ones wholly before the
   release point). A crash between the file and the release loses nothing: the segments
   are still there, a restart starts from the new snapshot and skips the entries it
   covers.

:meth:`SnapshotPlan.wrote` learns which WAL record holds each entry (from the writes the
caller performed), :meth:`SnapshotPlan.installed` that the state came from a snapshot
(received from the leader, or the one a restart started from).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from coord.raft import Storage
from coord.server.member_core import compact_point, snapshot_due, wal_release_point

__all__ = ["Compact", "ReleaseWal", "SnapshotPlan", "SnapshotPolicy", "TakeSnapshot"]


@dataclass(frozen=True, slots=True)
class TakeSnapshot:
    """Capture the state machine at ``index`` (the applied index) and save it."""

    index: int


@dataclass(frozen=True, slots=True)
class Compact:
    """Drop the in-memory log up to and including ``index`` (a snapshot covers it)."""

    index: int


@dataclass(frozen=True, slots=True)
class ReleaseWal:
    """Start a new WAL segment and delete the segments wholly before sequence number
    ``before`` (0: only start the new segment)."""

    before: int


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """``count``: snapshot every so many applied entries (0: never); ``max_bytes``: or sooner once
    the entries applied since hold that many bytes (or the last snapshot's size, if
    more); ``keep``/``keep_bytes``: entries kept in memory behind a snapshot, at most."""

    count: int
    max_bytes: int
    keep: int
    keep_bytes: int


@dataclass
class SnapshotPlan:
    policy: SnapshotPolicy
    index: int = 0
    """The index of the last snapshot taken (started) or installed."""
    size: int = 0
    """Bytes of the last snapshot saved or installed."""
    entry_seq: dict[int, int] = field(default_factory=dict)
    """Entry index -> sequence number of the WAL record that holds it (entries after the
    last snapshot started)."""
    _release: dict[int, int] = field(default_factory=dict)
    """Snapshot index -> its WAL release point, between ``started`` and ``saved``."""

    def wrote(self, seqs: Mapping[int, int]) -> None:
        """Entries' records were written (entry index -> sequence number)."""
        self.entry_seq.update(seqs)

    def due(self, applied: int, unsnapped_bytes: int) -> TakeSnapshot | None:
        """A snapshot at ``applied``, if one is due (``unsnapped_bytes``: bytes of the
        entries applied since the last snapshot that was saved)."""
        p = self.policy
        if p.count > 0 and applied > self.index and snapshot_due(applied, self.index, p.count,
                                                 unsnapped_bytes, p.max_bytes, self.size):
            return TakeSnapshot(applied)
        return None

    def started(self, index: int) -> None:
        """The state at ``index`` was captured: fix the WAL release point of that
        snapshot, forget the records it covers."""
        self.index = max(self.index, index)
        self._release[index] = wal_release_point(self.entry_seq, index)
        for i in [i for i in self.entry_seq if i <= index]:
            del self.entry_seq[i]

    def saved(self, index: int, size: int, storage: Storage,
              ) -> tuple[Compact | None, ReleaseWal]:
        """The snapshot at ``index`` (``size`` bytes) is durable and the log ``storage``
        holds it: how far to compact that log, and which WAL segments may go."""
        self.size = size
        p = self.policy
        to = compact_point(storage, index, p.keep, p.keep_bytes)
        compact = Compact(to) if to > storage.first_index() else None
        return compact, ReleaseWal(self._release.pop(index, 0))

    def abandoned(self, index: int) -> None:
        """The snapshot at ``index`` was not saved (its WAL segments stay)."""
        self._release.pop(index, None)

    def installed(self, index: int, size: int) -> None:
        """The state is now a snapshot at ``index`` of ``size`` bytes."""
        self.index = index
        if size:
            self.size = size
