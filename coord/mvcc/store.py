"""The revisioned key-value store: key index with generations, revision log, compaction.

Pure and deterministic: no I/O, no clock, no randomness. Applying the same sequence of writes
to two empty stores yields byte-identical snapshots.

Data model (chosen for memory: one tuple per key version, no per-revision objects):

* A *record* is a tuple ``(mod_rev, create_rev, version, lease, value)``. A tombstone (a
  delete) is ``(mod_rev, 0, 0, 0, None)``. Records are immutable.
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

import struct
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from operator import itemgetter

from sortedcontainers import SortedList

from coord.errors import Compacted, FutureRevision
from coord.mvcc.watch import WatchHub

Rec = tuple[int, int, int, int, bytes | None]
"""``(mod_rev, create_rev, version, lease, value)``; ``value is None`` marks a tombstone."""

KeyRec = tuple[bytes, Rec]
Hist = Rec | list[Rec]
"""A key's history: one record, or a list of records (oldest first)."""
Changes = tuple[bytes | Rec, ...]
"""The changes of one revision, flat: ``(key0, rec0, key1, rec1, ...)`` in op order."""

_modrev = itemgetter(0)
_SNAP_MAGIC = b"COORDMVCC2"
_Q = struct.Struct("<q")
_I = struct.Struct("<I")
_REC = struct.Struct("<qqqqi")  # mod, create, version, lease, value length (-1 = tombstone)


def rec_at(recs: list[Rec], rev: int) -> Rec | None:
    """The newest record of a key history list with ``mod_rev <= rev``, or None."""
    last = recs[-1]
    if last[0] <= rev:
        return last
    i = bisect_right(recs, rev, key=_modrev)
    return recs[i - 1] if i else None


def _at(h: Hist, rev: int) -> Rec | None:
    if isinstance(h, tuple):
        return h if h[0] <= rev else None
    return rec_at(h, rev)


def _last(h: Hist) -> Rec:
    return h if isinstance(h, tuple) else h[-1]


def _as_list(h: Hist) -> list[Rec]:
    return [h] if isinstance(h, tuple) else h


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
        "_pending",
        "_rev",
        "watch_hub",
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
        self.watch_hub: WatchHub = WatchHub(self)

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
        return [] if h is None else list(_as_list(h))

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
            return (entry, recs[bisect_left(recs, rev, key=_modrev)])
        out: list[bytes | Rec] = []
        seen: dict[bytes, int] = {}
        for k in entry:
            assert isinstance(k, bytes)
            recs = _as_list(index[k])
            j = seen.get(k, 0)
            seen[k] = j + 1
            out.append(k)
            out.append(recs[bisect_left(recs, rev, key=_modrev) + j])
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
            if rec[0] > rev:
                found = _at(h, rev)
                if found is None:
                    return [], 0, cur
                rec = found
            if rec[4] is None:
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
            if rec[0] > rev:
                found = _at(h, rev)
                if found is None:
                    continue
                rec = found
            if rec[4] is None:
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
        rec = _last(h) if rev <= 0 else _at(h, rev)
        if rec is None or rec[4] is None:
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
            if prev[4] is not None:
                return (rev, prev[1], prev[2] + 1, lease, value), prev
        return (rev, rev, 1, lease, value), None

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
            tomb: Rec = (self._next, 0, 0, 0, None)
            pending = self._pending
            for k, _rec in items:
                self._append(k, tomb)
                pending.append(k)
                pending.append(tomb)
        return items

    def commit(self) -> int:
        """End the batch: if anything was staged, it becomes revision ``current + 1`` and the
        watch hub is notified. Returns the (possibly unchanged) current revision."""
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
        hub = self.watch_hub
        if hub.active:
            hub.notify(rev, changes)
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
            rec: Rec = (rev, rev, 1, lease, value)
            index[key] = rec
            self._new.append(key)
            prev = None
        else:
            prev = h if isinstance(h, tuple) else h[-1]
            assert prev is not None
            if prev[4] is None:
                rec = (rev, rev, 1, lease, value)
                prev = None
            else:
                rec = (rev, prev[1], prev[2] + 1, lease, value)
            if isinstance(h, tuple):
                index[key] = [h, rec]
            else:
                h.append(rec)
        self._rev = rev
        self._next = rev + 1
        self._log.append(key)
        hub = self.watch_hub
        if hub.active:
            hub.notify(rev, (key, rec))
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
                if h[0] < rev and h[4] is None:
                    del index[k]
                    keys.remove(k)
                continue
            recs: list[Rec] = h
            i = bisect_left(recs, rev, key=_modrev)  # first record at or after rev
            if i == len(recs) or recs[i][0] != rev:
                i -= 1  # the newest record below rev: kept only if live
                if i < 0:
                    continue
                if recs[i][4] is None:
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

    # ------------------------------------------------------------------ hashing
    def hash_kv(self, rev: int = 0) -> tuple[int, int, int]:
        """CRC32 over every stored record with ``mod_rev <= rev`` (0 = current), keys in
        order: equal on members with the same history and compaction. Returns
        ``(hash, current_rev, compact_rev)``. Raises Compacted / FutureRevision like etcd
        (``0 < rev <= compact_rev`` → Compacted)."""
        if 0 < rev <= self._compact:
            raise Compacted()
        if rev > self._rev:
            raise FutureRevision()
        if rev <= 0:
            rev = self._rev
        h = zlib.crc32(b"key")
        pack = _REC.pack
        index = self._index
        for k in self.sorted_keys():
            for rec in _as_list(index[k]):
                if rec[0] > rev:
                    break
                v = rec[4]
                h = zlib.crc32(k, h)
                h = zlib.crc32(pack(rec[0], rec[1], rec[2], rec[3], -1 if v is None else len(v)), h)
                if v:
                    h = zlib.crc32(v, h)
        return h & 0xFFFFFFFF, self._rev, self._compact

    # ------------------------------------------------------------------ snapshots
    def _log_bytes(self, start: int, stop: int) -> bytes:
        """The snapshot encoding of the log entries of revisions ``start..stop-1``."""
        ipack, rpack = _I.pack, _REC.pack
        out: list[bytes] = []
        for r in range(start, stop):
            changes = self.log_entry(r)
            assert changes is not None
            out.append(ipack(len(changes) // 2))
            for j in range(0, len(changes), 2):
                k = changes[j]
                crec = changes[j + 1]
                assert isinstance(k, bytes) and isinstance(crec, tuple)
                v = crec[4]
                out.append(ipack(len(k)))
                out.append(k)
                out.append(rpack(crec[0], crec[1], crec[2], crec[3], -1 if v is None else len(v)))
                if v:
                    out.append(v)
        return b"".join(out)

    def snapshot(self) -> bytes:
        """Deterministic bytes of the whole state: base records (the kept record below the
        compact revision of each key, key order) and the log from the compact revision on."""
        return b"".join(self.snapshot_chunks(step=1 << 62))

    def snapshot_chunks(
        self, step: int = 200, reuse: SnapshotReuse | None = None
    ) -> SnapshotBuild:
        """The bytes of :meth:`snapshot` in pieces — header and base records, then the log
        ``step`` revisions at a time — so a caller can build a large snapshot between other
        work. The state is the one when the first piece is taken; writes made between
        pieces are left out (they only add revisions above it, and records are immutable).
        A compaction or restore between pieces would change what is below it: the next
        piece then raises ``ValueError`` and the caller starts again later.

        ``reuse`` (the :attr:`SnapshotBuild.reuse` of an earlier build of this store, with
        that build's bytes) lets the new build copy what has not changed since — the base
        records and the log up to the earlier snapshot's revision — instead of serialising
        it again; it is ignored when the store was compacted or restored since."""
        return SnapshotBuild(self, step, reuse)

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a :meth:`snapshot`. Watchers stay registered and are
        made to catch up from the restored history (or are told it was compacted)."""
        self._epoch += 1
        old_rev = self._rev
        mv = memoryview(data)
        if bytes(mv[: len(_SNAP_MAGIC)]) != _SNAP_MAGIC:
            raise ValueError("not an mvcc snapshot")
        pos = len(_SNAP_MAGIC)
        qun, iun, run = _Q.unpack_from, _I.unpack_from, _REC.unpack_from
        (cur,) = qun(mv, pos)
        (comp,) = qun(mv, pos + 8)
        pos += 16
        (nbase,) = iun(mv, pos)
        pos += 4
        index: dict[bytes, Hist] = {}
        keys: list[bytes] = []
        for _ in range(nbase):
            (kl,) = iun(mv, pos)
            pos += 4
            k = bytes(mv[pos : pos + kl])
            pos += kl
            mod, create, ver, lease, vl = run(mv, pos)
            pos += _REC.size
            v = bytes(mv[pos : pos + vl])
            pos += vl
            index[k] = (mod, create, ver, lease, v)
            keys.append(k)
        (first,) = qun(mv, pos)
        (nlog,) = iun(mv, pos + 8)
        pos += 12
        log: list[bytes | tuple[bytes, ...]] = []
        for _r in range(first, first + nlog):
            (n,) = iun(mv, pos)
            pos += 4
            names: list[bytes] = []
            tomb: Rec | None = None
            for _ in range(n):
                (kl,) = iun(mv, pos)
                pos += 4
                k = bytes(mv[pos : pos + kl])
                pos += kl
                mod, create, ver, lease, vl = run(mv, pos)
                pos += _REC.size
                rec: Rec
                if vl < 0:
                    if tomb is None:
                        tomb = (mod, 0, 0, 0, None)
                    rec = tomb
                else:
                    rec = (mod, create, ver, lease, bytes(mv[pos : pos + vl]))
                    pos += vl
                names.append(k)
                h = index.get(k)
                if h is None:
                    index[k] = rec
                    keys.append(k)
                elif isinstance(h, tuple):
                    index[k] = [h, rec]
                else:
                    h.append(rec)
            log.append(names[0] if n == 1 else tuple(names))
        if pos != len(data):
            raise ValueError("trailing bytes in mvcc snapshot")
        self._index = index
        self._keys = SortedList(keys)
        self._new = []
        self._log = log
        self._log_first = first
        self._pending = []
        self._rev = cur
        self._next = cur + 1
        self._compact = comp
        self.watch_hub.on_restore(old_rev)


class SnapshotReuse:
    """Where the parts of a store snapshot that the next snapshot of the same store can
    copy lie in its bytes: ``buf[base_start:base_end]`` is the compact revision, the base
    records and the first log revision; ``buf[log_start:log_end]`` the log of revisions
    ``first..last``. Valid while the store is not compacted or restored (its epoch)."""

    __slots__ = ("base_end", "base_start", "buf", "epoch", "first", "last", "log_end",
                 "log_start", "store")

    def __init__(self, store: KVStore, epoch: int, first: int, last: int,
                 base: tuple[int, int], log: tuple[int, int], buf: memoryview | None = None
                 ) -> None:
        self.store, self.epoch, self.first, self.last = store, epoch, first, last
        self.base_start, self.base_end = base
        self.log_start, self.log_end = log
        self.buf = buf

    def over(self, buf: memoryview) -> SnapshotReuse:
        """The same layout over ``buf``: the snapshot bytes (or an equal copy of them)."""
        return SnapshotReuse(self.store, self.epoch, self.first, self.last,
                             (self.base_start, self.base_end), (self.log_start, self.log_end),
                             buf)


class SnapshotBuild:
    """One snapshot of a :class:`KVStore` built in pieces (``KVStore.snapshot_chunks``).
    Iterating yields the pieces; once the last one is taken, :attr:`reuse` describes the
    result for the next build (set its buffer with :meth:`SnapshotReuse.over`)."""

    __slots__ = ("_it", "reuse")

    def __init__(self, store: KVStore, step: int, reuse: SnapshotReuse | None) -> None:
        self.reuse: SnapshotReuse | None = None
        self._it = self._pieces(store, step, reuse)

    def __iter__(self) -> Iterator[bytes | memoryview]:
        return self._it

    def __next__(self) -> bytes | memoryview:
        return next(self._it)

    def _pieces(self, store: KVStore, step: int, old: SnapshotReuse | None
                ) -> Iterator[bytes | memoryview]:
        assert not store._pending, "snapshot inside a write batch"
        epoch, last = store._epoch, store._rev
        compact = store._compact
        floor = max(compact, 2)
        first = floor if last >= floor else last + 1
        head: list[bytes | memoryview] = [_SNAP_MAGIC, _Q.pack(last)]
        pos = len(_SNAP_MAGIC) + _Q.size
        if (old is not None and old.buf is not None and old.store is store
                and old.epoch == epoch and old.first == first and old.last <= last):
            base = old.buf[old.base_start:old.base_end]
            head.append(base)
            head.append(_I.pack(last - first + 1))
            base_span = (pos, pos + len(base))
            log_start = base_span[1] + _I.size
            yield b"".join(head)
            copied = old.buf[old.log_start:old.log_end]
            yield copied
            size = log_start + len(copied)
            resume = old.last + 1
        else:
            ipack, rpack = _I.pack, _REC.pack
            out: list[bytes] = [_Q.pack(compact)]
            nbase = 0
            base_recs: list[bytes] = []
            index = store._index
            for k in store.sorted_keys():
                h = index[k]
                rec = h if isinstance(h, tuple) else h[0]
                if rec[0] < floor:
                    v = rec[4]
                    assert v is not None
                    base_recs.append(ipack(len(k)))
                    base_recs.append(k)
                    base_recs.append(rpack(rec[0], rec[1], rec[2], rec[3], len(v)))
                    base_recs.append(v)
                    nbase += 1
            out.append(ipack(nbase))
            out.extend(base_recs)
            out.append(_Q.pack(first))
            body = b"".join(out)
            base_span = (pos, pos + len(body))
            log_start = base_span[1] + _I.size
            yield b"".join((*head, body, _I.pack(last - first + 1)))
            size = log_start
            resume = first
        for start in range(resume, last + 1, step):
            if store._epoch != epoch:
                raise ValueError("store compacted or restored while its snapshot was built")
            piece = store._log_bytes(start, min(start + step, last + 1))
            size += len(piece)
            yield piece
        self.reuse = SnapshotReuse(store, epoch, first, last, base_span, (log_start, size))
