"""A simulated disk per node: a durable image plus the writes not yet fsync'd.

Writes (:meth:`Disk.write_snapshot`, :meth:`Disk.write_entries`,
:meth:`Disk.write_hard_state`) are queued as records, in order, in the volatile part;
:meth:`Disk.fsync` applies every queued record to the durable image; :meth:`Disk.crash`
throws the queue away — or, with ``torn=True``, keeps a random prefix of it (the OS may
have written some pages back before the crash; records are written in order, so a prefix
is what a WAL would hold). :meth:`Disk.restore` rebuilds the ``MemoryStorage`` mirror and
the ``HardState`` from the durable image, as a restarted server does from WAL + snapshot.

Image semantics mirror ``MemoryStorage``: entries at index ``i`` replace every stored
entry ≥ ``i``; a snapshot received from a leader replaces the whole log; a snapshot the
node took itself (``keep_log=True``) only drops the entries it covers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from coord.raft.storage import MemoryStorage
from coord.raft.types import Entry, HardState, Snapshot
from coord.server.member_ready import restore_storage


class DiskError(Exception):
    """The simulator wrote an inconsistent image (a simulator bug)."""


@dataclass
class DiskImage:
    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)  # all after the snapshot index

    def copy(self) -> DiskImage:
        return DiskImage(self.hard_state, self.snapshot, list(self.entries))

    @property
    def snap_index(self) -> int:
        return self.snapshot.metadata.index if self.snapshot is not None else 0

    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snap_index

    def apply(self, rec: Record) -> None:
        if rec.kind == "hs":
            assert rec.hard_state is not None
            self.hard_state = rec.hard_state
        elif rec.kind == "snap":
            assert rec.snapshot is not None
            snap = rec.snapshot
            idx = snap.metadata.index
            self.snapshot = snap
            if rec.keep_log:
                self.entries = [e for e in self.entries if e.index > idx]
            else:
                self.entries = []
        else:
            ents = rec.entries
            if not ents:
                return
            first = self.snap_index + 1
            if ents[-1].index < first:
                return
            if ents[0].index < first:
                ents = ents[first - ents[0].index :]
            base = self.entries[0].index if self.entries else first
            k = ents[0].index - base
            if k > len(self.entries):
                raise DiskError(
                    f"gap in the log: last {self.last_index()}, writing at {ents[0].index}"
                )
            del self.entries[k:]
            self.entries.extend(ents)


@dataclass(frozen=True, slots=True)
class Record:
    kind: str  # "hs" | "snap" | "ents"
    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    entries: tuple[Entry, ...] = ()
    keep_log: bool = False


@dataclass
class DiskStats:
    writes: int = 0
    fsyncs: int = 0
    crashes: int = 0
    lost_records: int = 0


class Disk:
    def __init__(self, image: DiskImage | None = None) -> None:
        self.durable = image.copy() if image is not None else DiskImage()
        self.pending: list[Record] = []
        self.stats = DiskStats()

    # -- writes ------------------------------------------------------------------------
    def write_hard_state(self, hs: HardState) -> None:
        self._write(Record("hs", hard_state=hs))

    def write_snapshot(self, snap: Snapshot, *, keep_log: bool) -> None:
        self._write(Record("snap", snapshot=snap, keep_log=keep_log))

    def write_entries(self, entries: list[Entry]) -> None:
        if entries:
            self._write(Record("ents", entries=tuple(entries)))

    def _write(self, rec: Record) -> None:
        self.stats.writes += 1
        self.pending.append(rec)

    def fsync(self) -> None:
        self.stats.fsyncs += 1
        for rec in self.pending:
            self.durable.apply(rec)
        self.pending.clear()

    def crash(self, rng: random.Random | None = None, *, torn: bool = False) -> int:
        """Lose the unsynced writes (all, or all but a random prefix); returns how many."""
        self.stats.crashes += 1
        keep = rng.randint(0, len(self.pending)) if (torn and rng is not None) else 0
        for rec in self.pending[:keep]:
            self.durable.apply(rec)
        lost = len(self.pending) - keep
        self.stats.lost_records += lost
        self.pending.clear()
        return lost

    # -- views -------------------------------------------------------------------------
    def volatile(self) -> DiskImage:
        """The image as the running node sees it (durable + unsynced writes)."""
        img = self.durable.copy()
        for rec in self.pending:
            img.apply(rec)
        return img

    def restore(self) -> tuple[MemoryStorage, HardState, Snapshot | None]:
        """A fresh ``MemoryStorage`` mirror of the durable image."""
        img = self.durable
        st = MemoryStorage()
        hs = restore_storage(st, img.snapshot, img.entries, img.hard_state)
        return st, hs, img.snapshot
