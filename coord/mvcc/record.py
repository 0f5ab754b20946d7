"""The record of one key version, and the shapes built from it.

A record is immutable and one is stored per key version, so it is a NamedTuple: the memory
of a bare tuple, fields read by name. Building one through its generated ``__new__`` runs a
Python-level function per record, several times the cost of a tuple literal (figures in
docs/benchmarks.md), so the store's write paths build records with :func:`new_rec`
(``tuple.__new__`` directly).
"""

from __future__ import annotations

from bisect import bisect_right
from operator import itemgetter
from typing import NamedTuple


class Rec(NamedTuple):
    """One version of a key. A tombstone (a delete) is ``(mod_rev, 0, 0, 0, None)``."""

    mod_rev: int
    """The main revision that wrote this version."""
    create_rev: int
    """The revision that created the key's current generation (0 in a tombstone)."""
    version: int
    """1 for the first version of a generation, +1 per put (0 in a tombstone)."""
    lease: int
    """The attached lease id, 0 for none."""
    value: bytes | None
    """The value; None marks a tombstone."""


new_rec = tuple.__new__
"""``new_rec(Rec, (mod_rev, create_rev, version, lease, value))``: a :class:`Rec` built
without the Python-level ``__new__`` of a NamedTuple (the write paths' hot spot)."""

KeyRec = tuple[bytes, Rec]
"""A key and one of its records (a range result, a watch event)."""
Hist = Rec | list[Rec]
"""A key's history: one record, or a list of records (oldest first)."""
Changes = tuple[bytes | Rec, ...]
"""The changes of one revision, flat: ``(key0, rec0, key1, rec1, ...)`` in op order."""

mod_rev_of = itemgetter(Rec._fields.index("mod_rev"))
"""The bisect key of a history: ``rec.mod_rev`` read by position with a C-level getter, no
Python frame per call as a lambda would cost (a long history's bisect calls it ~log2(n)
times)."""


def tombstone(rev: int) -> Rec:
    """The record of a delete at ``rev``."""
    return new_rec(Rec, (rev, 0, 0, 0, None))


def rec_at(recs: list[Rec], rev: int) -> Rec | None:
    """The newest record of a key history list with ``mod_rev <= rev``, or None."""
    last = recs[-1]
    if last.mod_rev <= rev:
        return last
    i = bisect_right(recs, rev, key=mod_rev_of)
    return recs[i - 1] if i else None


def hist_at(h: Hist, rev: int) -> Rec | None:
    """The newest record of a key history with ``mod_rev <= rev``, or None."""
    if isinstance(h, tuple):
        return h if h.mod_rev <= rev else None
    return rec_at(h, rev)


def hist_last(h: Hist) -> Rec:
    """The newest record of a key history."""
    return h if isinstance(h, tuple) else h[-1]


def hist_list(h: Hist) -> list[Rec]:
    """A key history as a list (the list itself when it is one)."""
    return [h] if isinstance(h, tuple) else h
