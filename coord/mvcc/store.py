"""The revisioned key-value store: key index with generations, revision log, compaction.

Pure and deterministic: no I/O, no clock, no randomness. Applying the same sequence of writes
to two empty stores yields byte-identical snapshots.

Data model (chosen for memory: one tuple per key version, no per-revision objects):

* A *record* is a :class:`coord.mvcc.record.Rec`, the named tuple ``(mod_rev, create_rev,
  version, lease, value)``. A tombstone (a delete) is ``(mod_rev, 0, 0, 0, None)``. Records
  are immutable.
* ``_index[key]`` is the key's history in increasing ``mod_rev`` order: the record itself when
  the key has exactly one (the common case after compaction), else a list of records. A
  *generation* is a run of live records ended by a tombstone; the newest record tells whether
  the key currently exists. ``_keys`` is the same key set, sorted, for ranges (keys created
  since the last ordered read wait in ``_new`` and are merged lazily, so a put of a new key
  costs no sorted insert).
* ``_log[rev - _log_first]`` names the keys changed at main revision ``rev`` in op order (the
  position is etcd's sub-revision): the key itself for a single change, else a tuple of keys.
  Their records are found in the index (the j-th occurrence of a key in a revision is its
  j-th record at that revision). Every revision in ``[max(compact_rev, 2), current_rev]`` has
  an entry, because a revision only exists when something changed.

Invariants:

* A new store is at revision 1; each committed write batch with at least one change bumps the
  revision by exactly one; a batch with no change does not.
* After ``compact(C)``: the log holds revisions ``>= C`` only (the entry of ``C`` is kept
  whole, so a watch opened at exactly ``C`` still sees every event of ``C``, deletes included:
  etcd bugs #18089/#19179), and each key keeps every record with ``mod_rev >= C`` plus the
  newest record below ``C`` when that one is live. So a read at any revision ``>= C`` is exact,
  every logged change still has its record, and the index is exactly "base records + replay of
  the kept log" (what a snapshot stores).
* ``compact_rev`` starts at -1 like etcd's ``compactMainRev``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Protocol

from sortedcontainers import SortedList

from coord.errors import Compacted, FutureRevision
from coord.mvcc.record import (
    Changes,
    Hist,
    KeyRec,
    Rec,
    hist_at,
    hist_last,
    hist_list,
    mod_rev_of,
    new_rec,
    tombstone,
)
from coord.mvcc.snapshot import SnapshotBuild, SnapshotReuse, decode, hash_records

__all__ = ["Changes", "CommitObserver", "KVStore", "KeyRec", "Rec", "SnapshotBuild",
           "SnapshotReuse"]

class CommitObserver(Protocol):
    """What the store tells about its revisions (the watch hub sits here, on top)."""

    @property
    def active(self) -> bool:
        """False when :meth:`on_commit` would do nothing (the store then skips it)."""

    def on_commit(self, rev: int, changes: Changes) -> None:
        """Revision ``rev`` was committed: its changes, flat ``(key, rec, ...)`` in op order."""

    def on_restore(self, old_rev: int) -> None:
        """The whole state was replaced by a snapshot; ``old_rev`` was the revision before."""


class KVStore:
    """The MVCC store. Writes happen inside an implicit batch: ``put``/``delete_range`` stage
    changes at revision ``current_rev + 1`` (visible to reads at once, as in etcd's write txn)
    and ``commit()`` makes them one revision; ``rollback()`` undoes a batch that failed.
    """

    __slots__ = (
        "_compact",
        "_epoch",
        "_index",
        "_keys",
        "_log",
        "_log_first",
        "_new",
        "_next",
        "_observer",
        "_pending",
        "_rev",
    )

    def __init__(self) -> None:
        self._index: dict[bytes, Hist] = {}
        self._keys: SortedList = SortedList()
        self._new: list[bytes] = []
        self._log: list[bytes | tuple[bytes, ...]] = []
        self._log_first = 2
        self._pending: list[bytes | Rec] = []
        self._rev = 1
        self._next = 2  # the int object shared by every record of the next revision
        self._compact = -1
        self._epoch = 0  # bumped by compact() and restore(): see snapshot_chunks()
        self._observer: CommitObserver | None = None

    def set_observer(self, observer: CommitObserver | None) -> None:
        """Install the one observer told of every commit and restore (None: none)."""
        assert observer is None or self._observer is None, "the store already has an observer"
        self._observer = observer

    # ------------------------------------------------------------------ accessors
    @property
    def current_revision(self) -> int:
        """The last committed revision (1 for a new store)."""
        return self._rev

    @property
    def compact_revision(self) -> int:
        """The last compaction revision, -1 if never compacted (etcd's compactMainRev)."""
        return self._compact

    @property
    def first_revision(self) -> int:
        """The oldest revision still readable (etcd's FirstRev, the compact revision)."""
        return self._compact

    @property
    def in_write(self) -> bool:
        """True while a batch has staged changes not yet committed."""
        return bool(self._pending)

    def pending_keys(self) -> list[bytes]:
        """Keys staged in the current batch, in op order."""
        return self._pending[0::2]  # type: ignore[return-value]

    def __len__(self) -> int:
        """Number of keys in the index (live or tombstoned, not yet compacted away)."""
        return len(self._index)

    def history(self, key: bytes) -> list[Rec]:
        """A copy of a key's records, oldest first (for tests and debugging)."""
        h = self._index.get(key)
        return [] if h is None else list(hist_list(h))

    def log_keys(self, rev: int) -> bytes | tuple[bytes, ...] | None:
        """The keys changed at ``rev`` (one key, or a tuple in op order), without resolving
        records; None if compacted away or absent."""
        i = rev - self._log_first
        if i < 0 or i >= len(self._log):
            return None
        return self._log[i]

    def log_entry(self, rev: int) -> Changes | None:
        """The changes of one revision as a flat ``(key, rec, ...)`` tuple in op order, or
        None if that revision is compacted away or does not exist."""
        i = rev - self._log_first
        if i < 0 or i >= len(self._log):
            return None
        entry = self._log[i]
        index = self._index
        if isinstance(entry, bytes):
            h = index[entry]
            if isinstance(h, tuple):
                return (entry, h)
            recs: list[Rec] = h
            return (entry, recs[bisect_left(recs, rev, key=mod_rev_of)])
        out: list[bytes | Rec] = []
        seen: dict[bytes, int] = {}
        for k in entry:
            assert isinstance(k, bytes)
            recs = hist_list(index[k])
            j = seen.get(k, 0)
            seen[k] = j + 1
            out.append(k)
            out.append(recs[bisect_left(recs, rev, key=mod_rev_of) + j])
        return tuple(out)

    def sorted_keys(self) -> SortedList:
        """Every indexed key in order (merges keys created since the last call)."""
        new = self._new
        if new:
            self._keys.update(new)
            new.clear()
        return self._keys

    # ------------------------------------------------------------------ reads
    def range(
        self,
        key: bytes,
        end: bytes = b"",
        rev: int = 0,
        limit: int = 0,
        count_only: bool = False,
    ) -> tuple[list[KeyRec], int, int]:
        """Live keys in ``[key, end)`` at ``rev``, ascending by key.

        ``end`` is the wire ``range_end``: empty = the single ``key``; ``b"\\0"`` = every key
        ``>= key``; ``end <= key`` = nothing. ``rev <= 0`` = latest (inside a batch: including
        the staged changes). Returns ``(items, count, header_rev)`` where ``count`` counts every
        live key in range (before any limit) and ``items`` is cut at ``limit`` when > 0 (empty
        when ``count_only``). Raises FutureRevision / Compacted (``rev == compact`` allowed).
        """
        cur = self._rev + 1 if self._pending else self._rev
        if rev > cur:
            raise FutureRevision()
        if rev <= 0:
            rev = cur
        if rev < self._compact:
            raise Compacted()
        index = self._index
        if not end:
            h = index.get(key)
            if h is None:
                return [], 0, cur
            rec = h if isinstance(h, tuple) else h[-1]
            if rec.mod_rev > rev:
                found = hist_at(h, rev)
                if found is None:
                    return [], 0, cur
                rec = found
            if rec.value is None:
                return [], 0, cur
            return ([] if count_only else [(key, rec)]), 1, cur
        if end == b"\0":
            it: Iterable[bytes] = self.sorted_keys().irange(key, None, (True, False))
        elif end <= key:
            return [], 0, cur
        else:
            it = self.sorted_keys().irange(key, end, (True, False))
        out: list[KeyRec] = []
        count = 0
        room = limit if limit > 0 and not count_only else (0 if count_only else -1)
        for k in it:
            h = index[k]
            rec = h if isinstance(h, tuple) else h[-1]
            if rec.mod_rev > rev:
                found = hist_at(h, rev)
                if found is None:
                    continue
                rec = found
            if rec.value is None:
                continue
            count += 1
            if room:
                out.append((k, rec))
                room -= 1
        return out, count, cur

    def get(self, key: bytes, rev: int = 0) -> Rec | None:
        """The live record of ``key`` at ``rev`` (0 = latest incl. staged), else None.

        No revision checks: callers use it for values they know are readable.
        """
        h = self._index.get(key)
        if h is None:
            return None
        rec = hist_last(h) if rev <= 0 else hist_at(h, rev)
        if rec is None or rec.value is None:
            return None
        return rec

    def prev_of(self, key: bytes, rev: int) -> Rec | None:
        """The live record of ``key`` at ``rev - 1`` (a watch event's prev_kv), or None when
        that revision is compacted or the key did not exist then."""
        if rev - 1 < self._compact:
            return None
        return self.get(key, rev - 1) if rev > 1 else None

    # ------------------------------------------------------------------ writes
    def _append(self, key: bytes, rec: Rec) -> None:
        index = self._index
        h = index.get(key)
        if h is None:
            index[key] = rec
            self._new.append(key)
        elif isinstance(h, tuple):
            index[key] = [h, rec]
        else:
            h.append(rec)

    def _new_rec(self, key: bytes, value: bytes, lease: int) -> tuple[Rec, Rec | None]:
        rev = self._next
        h = self._index.get(key)
        if h is not None:
            prev = h if isinstance(h, tuple) else h[-1]
            if prev.value is not None:
                return new_rec(Rec, (rev, prev.create_rev, prev.version + 1, lease, value)), prev
        return new_rec(Rec, (rev, rev, 1, lease, value)), None

    def put(self, key: bytes, value: bytes, lease: int) -> Rec | None:
        """Stage a put at ``current + 1``; returns the previous live record (None if absent).

        Version +1 and create_rev kept within a generation; a new generation starts at
        version 1 with create_rev = the new revision.
        """
        rec, prev = self._new_rec(key, value, lease)
        self._append(key, rec)
        pending = self._pending
        pending.append(key)
        pending.append(rec)
        return prev

    def delete_range(self, key: bytes, end: bytes = b"") -> list[KeyRec]:
        """Stage deletes of every live key in ``[key, end)`` (wire ``range_end`` rules).

        Returns the deleted ``(key, previous record)`` pairs in key order. One tombstone tuple
        is shared by every key deleted in this call.
        """
        items, _, _ = self.range(key, end)
        if items:
            tomb = tombstone(self._next)
            pending = self._pending
            for k, _rec in items:
                self._append(k, tomb)
                pending.append(k)
                pending.append(tomb)
        return items

    def commit(self) -> int:
        """End the batch: if anything was staged, it becomes revision ``current + 1`` and the
        commit observer is told. Returns the (possibly unchanged) current revision."""
        pending = self._pending
        if not pending:
            return self._rev
        self._rev = rev = self._next
        self._next = rev + 1
        changes = tuple(pending)
        pending.clear()
        if len(changes) == 2:
            self._log.append(changes[0])  # type: ignore[arg-type]
        else:
            self._log.append(changes[0::2])  # type: ignore[arg-type]
        obs = self._observer
        if obs is not None and obs.active:
            obs.on_commit(rev, changes)
        return rev

    def put_commit(self, key: bytes, value: bytes, lease: int) -> tuple[Rec | None, int]:
        """Fast path: one put as its own revision (outside any batch). Returns
        ``(previous live record or None, new revision)``."""
        assert not self._pending, "put_commit inside a write batch"
        rev = self._next
        index = self._index
        h = index.get(key)
        prev: Rec | None
        if h is None:
            rec: Rec = new_rec(Rec, (rev, rev, 1, lease, value))
            index[key] = rec
            self._new.append(key)
            prev = None
        else:
            prev = h if isinstance(h, tuple) else h[-1]
            assert prev is not None
            if prev.value is None:
                rec = new_rec(Rec, (rev, rev, 1, lease, value))
                prev = None
            else:
                rec = new_rec(Rec, (rev, prev.create_rev, prev.version + 1, lease, value))
            if isinstance(h, tuple):
                index[key] = [h, rec]
            else:
                h.append(rec)
        self._rev = rev
        self._next = rev + 1
        self._log.append(key)
        obs = self._observer
        if obs is not None and obs.active:
            obs.on_commit(rev, (key, rec))
        return prev, rev

    def rollback(self) -> None:
        """Undo every staged change of the current batch (used when an op fails midway)."""
        pending = self._pending
        index = self._index
        keys = self.sorted_keys()
        for i in range(len(pending) - 2, -1, -2):
            key = pending[i]
            assert isinstance(key, bytes)
            h = index[key]
            if isinstance(h, tuple):
                del index[key]
                keys.remove(key)
            else:
                h.pop()
                if len(h) == 1:
                    index[key] = h[0]
        pending.clear()

    # ------------------------------------------------------------------ compaction
    def compact(self, rev: int) -> None:
        """Physically compact at ``rev``: see the module invariants.

        ``rev <= compact_rev`` → Compacted; ``rev > current`` → FutureRevision. Cost is
        proportional to the number of changes in the compacted revisions, not the key count.
        """
        if rev <= self._compact:
            raise Compacted()
        if rev > self._rev:
            raise FutureRevision()
        assert not self._pending, "compact inside a write batch"
        self._epoch += 1
        log = self._log
        first = self._log_first
        touched: dict[bytes, None] = {}
        for r in range(max(self._compact, first), rev + 1):
            entry = log[r - first]
            if isinstance(entry, bytes):
                touched[entry] = None
            else:
                for k in entry:
                    touched[k] = None
        drop = rev - first
        if drop > 0:
            del log[:drop]
            self._log_first = rev
        keys = self.sorted_keys()
        index = self._index
        for k in touched:
            h = index.get(k)
            if h is None:
                continue
            if isinstance(h, tuple):
                if h.mod_rev < rev and h.value is None:
                    del index[k]
                    keys.remove(k)
                continue
            recs: list[Rec] = h
            i = bisect_left(recs, rev, key=mod_rev_of)  # first record at or after rev
            if i == len(recs) or recs[i].mod_rev != rev:
                i -= 1  # the newest record below rev: kept only if live
                if i < 0:
                    continue
                if recs[i].value is None:
                    i += 1
            n = len(recs) - i
            if n == 0:
                del index[k]
                keys.remove(k)
            elif n == 1:
                index[k] = recs[-1]
            elif i:
                del recs[:i]
        self._compact = rev

    # ------------------------------------------------------------------ whole state
    def hash_kv(self, rev: int = 0) -> tuple[int, int, int]:
        """CRC32 over every stored record with ``mod_rev <= rev`` (0 = current), keys in
        order (:func:`coord.mvcc.snapshot.hash_records`): equal on members with the same
        history and compaction. Returns ``(hash, current_rev, compact_rev)``. Raises
        Compacted / FutureRevision like etcd (``0 < rev <= compact_rev`` → Compacted)."""
        if 0 < rev <= self._compact:
            raise Compacted()
        if rev > self._rev:
            raise FutureRevision()
        return hash_records(self.histories(), rev if rev > 0 else self._rev), self._rev, \
            self._compact

    @property
    def epoch(self) -> int:
        """Bumped by every compaction and restore: a snapshot build taken before either is
        stale (see :meth:`snapshot_chunks`)."""
        return self._epoch

    def histories(self) -> Iterator[tuple[bytes, Hist]]:
        """``(key, history)`` of every key, in key order."""
        index = self._index
        for k in self.sorted_keys():
            yield k, index[k]

    def snapshot(self) -> bytes:
        """Deterministic bytes of the whole state (format: :mod:`coord.mvcc.snapshot`): base
        records (the kept record below the compact revision of each key, key order) and the
        log from the compact revision on."""
        return b"".join(self.snapshot_chunks(step=1 << 62))

    def snapshot_chunks(
        self, step: int = 200, reuse: SnapshotReuse | None = None
    ) -> SnapshotBuild:
        """The bytes of :meth:`snapshot` in pieces, ``step`` log revisions each, with what an
        earlier build can ``reuse``: see :class:`SnapshotBuild`."""
        return SnapshotBuild(self, step, reuse)

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a :meth:`snapshot`. The commit observer is told
        (watchers stay registered and catch up from the restored history, or are told it
        was compacted)."""
        d = decode(data)
        self._epoch += 1
        old_rev = self._rev
        self._index = d.histories
        self._keys = SortedList(d.keys)
        self._new = []
        self._log = d.log
        self._log_first = d.log_first
        self._pending = []
        self._rev = d.current_rev
        self._next = d.current_rev + 1
        self._compact = d.compact_rev
        obs = self._observer
        if obs is not None:
            obs.on_restore(old_rev)
