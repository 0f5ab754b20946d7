"""One watcher of the hub: its range and filters, and how its events are selected, sized and
batched for output (with prev records when asked). Also what the hub reads from the store.
"""

from __future__ import annotations

from typing import Protocol

from coord.mvcc.record import Changes, KeyRec, Rec
from coord.mvcc.store import CommitObserver
from coord.mvcc.watch_types import EventBatch, WatchSpec


class History(Protocol):
    """What the hub reads from the store (:class:`coord.mvcc.store.KVStore`)."""

    @property
    def current_revision(self) -> int: ...

    @property
    def compact_revision(self) -> int: ...

    def log_keys(self, rev: int) -> bytes | tuple[bytes, ...] | None: ...

    def log_entry(self, rev: int) -> Changes | None: ...

    def prev_of(self, key: bytes, rev: int) -> Rec | None: ...

    def set_observer(self, observer: CommitObserver | None) -> None: ...


class Stream(Protocol):
    """What the hub does with a watcher's stream (:class:`coord.mvcc.watch.WatchStream`);
    a protocol so that this module does not import the hub back."""

    def _enqueue_events(self, w: Watcher, rev: int, evs: list[KeyRec]) -> bool: ...

    def _signal(self) -> None: ...

    def _make_unsynced(self, w: Watcher) -> None: ...


class Watcher:
    """One watch: ``[key, end)`` where ``end is None`` means the single key and ``end == b""``
    means every key ``>= key``. ``next_rev`` is the lowest revision not yet delivered."""

    __slots__ = (
        "end",
        "fragment",
        "id",
        "key",
        "next_rev",
        "no_delete",
        "no_put",
        "prev_kv",
        "progress_notify",
        "stream",
        "synced",
    )

    def __init__(
        self, stream: Stream, wid: int, *, key: bytes, end: bytes | None, next_rev: int,
        spec: WatchSpec,
    ) -> None:
        self.stream = stream
        self.id = wid
        self.key = key
        self.end = end
        self.next_rev = next_rev
        self.prev_kv = spec.prev_kv
        self.fragment = spec.fragment
        self.progress_notify = spec.progress_notify
        self.no_put = spec.no_put
        self.no_delete = spec.no_delete
        self.synced = False

    def contains(self, k: bytes) -> bool:
        """True if ``k`` is in the watched range."""
        end = self.end
        if end is None:
            return k == self.key
        return k >= self.key and (not end or k < end)


new = tuple.__new__
"""Builds a NamedTuple without its Python-level ``__new__`` (one EventBatch per watcher per
revision)."""


def select(w: Watcher, changes: Changes) -> list[KeyRec]:
    """The changes of one revision that ``w`` sees: in its range and not filtered out."""
    evs: list[KeyRec] = []
    no_put, no_delete = w.no_put, w.no_delete
    for j in range(0, len(changes), 2):
        k = changes[j]
        assert isinstance(k, bytes)
        if w.contains(k):
            rec = changes[j + 1]
            assert isinstance(rec, tuple)
            if (no_put and rec.value is not None) or (no_delete and rec.value is None):
                continue
            evs.append((k, rec))
    return evs


def batch(w: Watcher, hrev: int, evs: list[KeyRec], store: History) -> EventBatch:
    """The output of one watcher's events, with their prev records if it asked for them
    (read now: a compaction since the commit hides them, as in etcd)."""
    if not w.prev_kv:
        return new(EventBatch, (w.id, hrev, evs, None, w.fragment))
    prev_of = store.prev_of
    prevs: list[Rec | None] = []
    for k, rec in evs:
        mod_rev = rec.mod_rev
        prevs.append(None if rec.create_rev == mod_rev else prev_of(k, mod_rev))
    return new(EventBatch, (w.id, hrev, evs, prevs, w.fragment))


def events_size(evs: list[KeyRec]) -> int:
    """The queue accounting size of some events: keys, values and a fixed overhead each."""
    n = 0
    for k, rec in evs:
        v = rec.value
        n += len(k) + 32 + (len(v) if v is not None else 0)
    return n


def add_event(batches: dict[Watcher, list[KeyRec]], w: Watcher, k: bytes, rec: Rec) -> None:
    """Add one change of a committing revision to ``w``'s batch; a filtered-out change still
    registers ``w`` (with no events: it advances without output)."""
    if (w.no_put and rec.value is not None) or (w.no_delete and rec.value is None):
        batches.setdefault(w, [])
        return
    lst = batches.get(w)
    if lst is None:
        batches[w] = [(k, rec)]
    else:
        lst.append((k, rec))
