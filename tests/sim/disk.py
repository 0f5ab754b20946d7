"""A simulated disk per node, laid out as the server's data dir: snapshot files and a WAL
of numbered records in segments.

* Snapshot files (:meth:`Disk.write_snapshot`) are durable when written, as the server's
  are (an atomic, fsync'd file): a snapshot the node took itself (``keep_log=True``)
  only adds a file; one received from a leader (``keep_log=False``) adds a file and then
  a marker record to the WAL, in the same Ready's write.
* WAL records — one per entry, hard states, markers — get consecutive sequence numbers
  (:meth:`Disk.write_entries` returns those of its entries) and are volatile until
  :meth:`Disk.fsync`; :meth:`Disk.crash` throws the unsynced ones away, or with
  ``torn=True`` keeps a random prefix of them (records are written in order).
* :meth:`Disk.cut` syncs and starts a new segment that begins with a copy of the latest
  hard state and marker (``coord.storage.wal``'s carry-over); :meth:`Disk.release_before`
  deletes every segment, but the last, all of whose records are before a sequence number
  (``WAL.release_before``); :meth:`Disk.purge` keeps the newest snapshot files.

:meth:`Disk.restore` reads it back as the server's recovery does: the newest snapshot
file, the WAL's records replayed by ``coord.storage.records.replay`` itself (an entry at
index i replaces every earlier-written entry >= i), and the production recovery decision
(``coord.server.member_ready.recover``), which refuses a log that no longer reaches back
to the snapshot (:class:`~coord.server.member_ready.LogGap`) — what a wrong WAL release
would cause.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from coord.raft.storage import MemoryStorage
from coord.raft.types import Entry, HardState, Snapshot
from coord.server.member_ready import Recovered, recover
from coord.storage.codec import Record as WalRecord
from coord.storage.records import (
    entry_record,
    hard_state_record,
    replay,
    snapshot_marker_record,
)

SNAPSHOT_FILES_KEPT = 2
"""Snapshot files kept by :meth:`Disk.purge` (the server's ``snaps.purge(keep=2)``)."""


class DiskError(Exception):
    """The simulator wrote an inconsistent image (a simulator bug)."""


@dataclass(frozen=True, slots=True)
class Record:
    kind: str  # "hs" | "marker" | "ent"
    hard_state: HardState | None = None
    entry: Entry | None = None
    marker: tuple[int, int] = (0, 0)  # snapshot index, term


def _encode(rec: Record) -> WalRecord:
    if rec.kind == "ent":
        assert rec.entry is not None
        return entry_record(rec.entry)
    if rec.kind == "hs":
        assert rec.hard_state is not None
        return hard_state_record(rec.hard_state)
    return snapshot_marker_record(*rec.marker)


@dataclass
class Segment:
    first_seq: int
    records: list[tuple[int, Record]] = field(default_factory=list)


@dataclass
class DiskImage:
    """What a restart would read: the newest snapshot, the log after it, the hard state."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)  # all after the snapshot index
    entry_seq: dict[int, int] = field(default_factory=dict)

    @property
    def snap_index(self) -> int:
        return self.snapshot.metadata.index if self.snapshot is not None else 0

    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snap_index


@dataclass
class DiskStats:
    writes: int = 0
    fsyncs: int = 0
    crashes: int = 0
    lost_records: int = 0
    cuts: int = 0
    segments_released: int = 0


class Disk:
    def __init__(self) -> None:
        self.segments: list[Segment] = [Segment(1)]
        """The WAL's durable records (and, in the last segment, nothing volatile)."""
        self.pending: list[tuple[int, Record]] = []
        """Records written to the last segment, not yet fsync'd."""
        self.snapshots: list[Snapshot] = []
        """Snapshot files, oldest first."""
        self.next_seq = 1
        self._last = 0  # the log's last index as written (volatile)
        self.stats = DiskStats()

    # -- writes ------------------------------------------------------------------------
    def write_hard_state(self, hs: HardState) -> None:
        self._append(Record("hs", hard_state=hs))

    def write_snapshot(self, snap: Snapshot, *, keep_log: bool) -> None:
        md = snap.metadata
        self.stats.writes += 1
        self.snapshots.append(snap)
        if not keep_log:
            self._last = md.index
            self._append(Record("marker", marker=(md.index, md.term)))

    def write_entries(self, entries: list[Entry]) -> dict[int, int]:
        """Append one record per entry; returns entry index -> sequence number."""
        if not entries:
            return {}
        if entries[0].index > self._last + 1:
            raise DiskError(f"gap in the log: last {self._last}, writing at {entries[0].index}")
        self._last = entries[-1].index
        return {e.index: self._append(Record("ent", entry=e)) for e in entries}

    def _append(self, rec: Record) -> int:
        self.stats.writes += 1
        seq = self.next_seq
        self.next_seq += 1
        self.pending.append((seq, rec))
        return seq

    def fsync(self) -> None:
        self.stats.fsyncs += 1
        self.segments[-1].records.extend(self.pending)
        self.pending.clear()

    def crash(self, rng: random.Random | None = None, *, torn: bool = False) -> int:
        """Lose the unsynced writes (all, or all but a random prefix); returns how many."""
        self.stats.crashes += 1
        keep = rng.randint(0, len(self.pending)) if (torn and rng is not None) else 0
        self.segments[-1].records.extend(self.pending[:keep])
        lost = len(self.pending) - keep
        self.stats.lost_records += lost
        self.pending.clear()
        self.next_seq = self._durable_end()  # the reopened WAL appends after its last record
        self._last = self.image().last_index()
        return lost

    def _durable_end(self) -> int:
        """The sequence number after the last durable record."""
        last = self.segments[-1]
        return last.records[-1][0] + 1 if last.records else last.first_seq

    # -- segments ------------------------------------------------------------------------
    def cut(self) -> None:
        """Sync, then start a new segment holding a copy of the latest hard state and
        snapshot marker."""
        self.fsync()
        self.stats.cuts += 1
        latest: dict[str, Record] = {}
        for seg in self.segments:
            for _, rec in seg.records:
                if rec.kind in ("hs", "marker"):
                    latest.pop(rec.kind, None)
                    latest[rec.kind] = rec
        seg = Segment(self.next_seq)
        for rec in latest.values():
            seg.records.append((self.next_seq, rec))
            self.next_seq += 1
        self.segments.append(seg)

    def release_before(self, seq: int) -> int:
        """Delete every segment but the last all of whose records are before ``seq``;
        returns how many."""
        if seq > self._durable_end() - 1:
            self.fsync()
        k = 0
        while k + 1 < len(self.segments) and self.segments[k + 1].first_seq <= seq:
            k += 1
        del self.segments[:k]
        self.stats.segments_released += k
        return k

    def purge(self, keep: int = SNAPSHOT_FILES_KEPT) -> None:
        del self.snapshots[:-keep]

    # -- views -------------------------------------------------------------------------
    def image(self, *, volatile: bool = False) -> DiskImage:
        """What a restart reads (``volatile``: as if every write were durable): the
        newest snapshot file and the WAL's records replayed by the server's own
        ``coord.storage.records.replay``."""
        img = DiskImage()
        img.snapshot = self.snapshots[-1] if self.snapshots else None
        records = [r for seg in self.segments for _, r in seg.records]
        if volatile:
            records += [r for _, r in self.pending]
        replayed = replay([_encode(r) for r in records], self.segments[0].first_seq)
        img.hard_state = replayed.hard_state
        img.entry_seq = replayed.entry_seq
        img.entries = [e for e in replayed.entries if e.index > img.snap_index]
        return img

    @property
    def durable(self) -> DiskImage:
        return self.image()

    def volatile(self) -> DiskImage:
        """The image as the running node sees it (durable + unsynced writes)."""
        return self.image(volatile=True)

    def restore(self) -> tuple[MemoryStorage, Recovered, dict[int, int]]:
        """A fresh ``MemoryStorage`` mirror of the durable image, what the member starts
        from, and the WAL sequence number of each entry record; raises ``LogGap``."""
        img = self.image()
        st = MemoryStorage()
        return st, recover(st, img.snapshot, img.entries, img.hard_state), img.entry_seq
