"""The store's whole-state encodings: the snapshot format — encoded in slices (with reuse of
an earlier build) and decoded — and the hash members compare.

Layout (little-endian)::

    magic "COORDMVCC2" | current_rev q | compact_rev q
    | nbase I | nbase x (key_len I, key, record)      base records, key order
    | first_rev q | nlog I | nlog x (n I, n x (key_len I, key, record))   the log

A record is ``mod q, create q, version q, lease q, value_len i`` then the value
(``value_len == -1``: a tombstone, no value). A base record is the oldest kept record of a
key when it lies below the first logged revision (always live).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import NamedTuple, Protocol

from coord.mvcc.record import Changes, Hist, Rec, hist_list, new_rec


class Source(Protocol):
    """What a snapshot reads of the store (:class:`coord.mvcc.store.KVStore`); a protocol
    so that this module does not import the store back."""

    @property
    def in_write(self) -> bool: ...

    @property
    def epoch(self) -> int: ...

    @property
    def current_revision(self) -> int: ...

    @property
    def compact_revision(self) -> int: ...

    def log_entry(self, rev: int) -> Changes | None: ...

    def histories(self) -> Iterator[tuple[bytes, Hist]]: ...

SNAP_MAGIC = b"COORDMVCC2"
_Q = struct.Struct("<q")
_I = struct.Struct("<I")
REC_STRUCT = struct.Struct("<qqqqi")  # mod, create, version, lease, value length (-1 = tombstone)


class Decoded(NamedTuple):
    """A decoded store snapshot: what :meth:`KVStore.restore` installs."""

    current_rev: int
    compact_rev: int
    histories: dict[bytes, Hist]
    keys: list[bytes]
    """Every key of ``histories``, in order."""
    log: list[bytes | tuple[bytes, ...]]
    log_first: int


def decode(data: bytes) -> Decoded:
    """Parse a snapshot; raises ValueError when it is not one."""
    mv = memoryview(data)
    if bytes(mv[: len(SNAP_MAGIC)]) != SNAP_MAGIC:
        raise ValueError("not an mvcc snapshot")
    pos = len(SNAP_MAGIC)
    qun, iun, run = _Q.unpack_from, _I.unpack_from, REC_STRUCT.unpack_from
    rsize = REC_STRUCT.size
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
        pos += rsize
        v = bytes(mv[pos : pos + vl])
        pos += vl
        index[k] = new_rec(Rec, (mod, create, ver, lease, v))
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
            pos += rsize
            rec: Rec
            if vl < 0:
                if tomb is None:  # one tombstone shared by a revision's deletes, as in delete_range
                    tomb = new_rec(Rec, (mod, 0, 0, 0, None))
                rec = tomb
            else:
                rec = new_rec(Rec, (mod, create, ver, lease, bytes(mv[pos : pos + vl])))
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
    return Decoded(cur, comp, index, keys, log, first)


def hash_records(histories: Iterable[tuple[bytes, Hist]], rev: int) -> int:
    """CRC32 over every record with ``mod_rev <= rev`` of ``(key, history)`` pairs in key
    order: each key, then its record packed as in a snapshot, then its value."""
    h = zlib.crc32(b"key")
    pack = REC_STRUCT.pack
    for k, hist in histories:
        for rec in hist_list(hist):
            if rec.mod_rev > rev:
                break
            v = rec.value
            h = zlib.crc32(k, h)
            h = zlib.crc32(pack(rec.mod_rev, rec.create_rev, rec.version, rec.lease,
                                -1 if v is None else len(v)), h)
            if v:
                h = zlib.crc32(v, h)
    return h & 0xFFFFFFFF


def log_bytes(store: Source, start: int, stop: int) -> bytes:
    """The snapshot encoding of the log entries of revisions ``start..stop-1``."""
    ipack, rpack = _I.pack, REC_STRUCT.pack
    out: list[bytes] = []
    for r in range(start, stop):
        changes = store.log_entry(r)
        assert changes is not None
        out.append(ipack(len(changes) // 2))
        for j in range(0, len(changes), 2):
            k = changes[j]
            crec = changes[j + 1]
            assert isinstance(k, bytes) and isinstance(crec, tuple)
            v = crec.value
            out.append(ipack(len(k)))
            out.append(k)
            out.append(rpack(crec.mod_rev, crec.create_rev, crec.version, crec.lease,
                             -1 if v is None else len(v)))
            if v:
                out.append(v)
    return b"".join(out)


class SnapshotReuse:
    """Where the parts of a store snapshot that the next snapshot of the same store can
    copy lie in its bytes: ``buf[base_start:base_end]`` is the compact revision, the base
    records and the first log revision; ``buf[log_start:log_end]`` the log of revisions
    ``first..last``. Valid while the store is not compacted or restored (its epoch)."""

    __slots__ = ("base_end", "base_start", "buf", "epoch", "first", "last", "log_end",
                 "log_start", "store")

    def __init__(self, store: Source, epoch: int, first: int, last: int,
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
    """One snapshot of a :class:`KVStore` built in pieces (``KVStore.snapshot_chunks``):
    header and base records, then the log ``step`` revisions at a time, so a caller can
    build a large snapshot between other work. Iterating yields the pieces; once the last
    one is taken, :attr:`reuse` describes the result for the next build (set its buffer with
    :meth:`SnapshotReuse.over`).

    The state is the one when the first piece is taken; writes made between pieces are left
    out (they only add revisions above it, and records are immutable). A compaction or
    restore between pieces would change what is below it: the next piece then raises
    ``ValueError`` and the caller starts again later.

    ``reuse`` (the :attr:`reuse` of an earlier build of this store, with that build's bytes)
    lets the new build copy what has not changed since — the base records and the log up to
    the earlier snapshot's revision — instead of serialising it again; it is ignored when
    the store was compacted or restored since."""

    __slots__ = ("_it", "reuse")

    def __init__(self, store: Source, step: int, reuse: SnapshotReuse | None) -> None:
        self.reuse: SnapshotReuse | None = None
        self._it = self._pieces(store, step, reuse)

    def __iter__(self) -> Iterator[bytes | memoryview]:
        return self._it

    def __next__(self) -> bytes | memoryview:
        return next(self._it)

    def _pieces(self, store: Source, step: int, old: SnapshotReuse | None
                ) -> Iterator[bytes | memoryview]:
        assert not store.in_write, "snapshot inside a write batch"
        epoch, last = store.epoch, store.current_revision
        compact = store.compact_revision
        floor = max(compact, 2)
        first = floor if last >= floor else last + 1
        head: list[bytes | memoryview] = [SNAP_MAGIC, _Q.pack(last)]
        pos = len(SNAP_MAGIC) + _Q.size
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
            ipack, rpack = _I.pack, REC_STRUCT.pack
            out: list[bytes] = [_Q.pack(compact)]
            nbase = 0
            base_recs: list[bytes] = []
            for k, hist in store.histories():
                rec = hist if isinstance(hist, tuple) else hist[0]
                if rec.mod_rev < floor:
                    v = rec.value
                    assert v is not None
                    base_recs.append(ipack(len(k)))
                    base_recs.append(k)
                    base_recs.append(rpack(rec.mod_rev, rec.create_rev, rec.version, rec.lease,
                                           len(v)))
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
            if store.epoch != epoch:
                raise ValueError("store compacted or restored while its snapshot was built")
            piece = log_bytes(store, start, min(start + step, last + 1))
            size += len(piece)
            yield piece
        self.reuse = SnapshotReuse(store, epoch, first, last, base_span, (log_start, size))
