"""The watch hub: etcd's watchable store plus the per-stream watch-id bookkeeping of v3rpc.

Pure and synchronous (no asyncio, no threads, no protobuf): it sits on top of the store as
its commit observer, and produces plain output items (:mod:`coord.mvcc.watch_types`) that
the API layer (``coord.api.watch``) turns into ``WatchResponse`` messages and writes::

    hub = WatchHub(store)                          # observes the store's commits
    stream = hub.open_stream(wake)                 # one per Watch RPC; wake() = has output
    stream.create(WatchSpec(...)) / stream.cancel(id) / stream.request_progress()
    while items := stream.pending():               # bounded batch, in order
        ...                                        # EventBatch / Created / Canceled / ...
    stream.close()                                 # the call ended

Every item carries the header revision etcd sets (live events: their revision; history
catch-up batches, created/canceled/progress: the current revision; compaction cancel: none,
header revision 0 on the wire).

Invariants:

* A watcher is either *synced* (``next_rev == current + 1``, or a future start revision) and
  registered in the hub's key/range indexes, or *unsynced* and listed only on its stream.
* Synced watchers get each committed revision as one batch (events in op order) the moment
  it commits, unless their stream already holds ``max_queued`` items or ``max_queued_bytes``
  of values: then the watcher turns unsynced and later catches up from the revision log in
  bounded chunks. A write therefore never waits for a reader.
* Events reach a watcher in strictly increasing revision order, each exactly once; no event
  below its ``next_rev`` is ever delivered (etcd #15271, #20221), and a revision is never split
  across batches (the API layer fragments one batch when the watcher asked for ``fragment``).
* A watcher whose ``next_rev`` falls below the compact revision gets the compaction cancel
  and is removed. ``start_revision == compact_rev`` is served in full, deletes included (etcd
  #19179, #18089).
* A progress reply is produced only when every watcher on the stream is synced and after every
  event queued before it, so no later event can be at or below its revision (etcd #15220).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from coord.mvcc.record import Changes, KeyRec
from coord.mvcc.watch_types import (
    DUPLICATE_ID_REASON,
    EMPTY_RANGE_REASON,
    Canceled,
    CompactCanceled,
    Created,
    EventBatch,
    Progress,
    WatchOutput,
    WatchSpec,
)
from coord.mvcc.watcher import History, Watcher, add_event, batch, events_size, new, select

_Queued = tuple[Watcher, int, list[KeyRec], int]
"""One synced watcher's events of one revision, queued as a plain tuple ``(watcher,
header_rev, [(key, rec), ...], size)``; its EventBatch is made when drained (prev records are
read then, as in etcd). ``size`` is the events' :func:`events_size`."""
_Item = WatchOutput | _Queued
"""A stream queue item: a ready output item, or queued events."""


class WatchStream:
    """The watches of one gRPC Watch stream (ids are per stream: auto ids from 0).

    ``wake`` is called (with no arguments) whenever output becomes available; set it to an
    ``asyncio.Event.set``. :meth:`pending` drains output in bounded batches and returns ``[]``
    when nothing is left.
    """

    def __init__(self, hub: WatchHub) -> None:
        self.hub = hub
        self.wake: Callable[[], None] | None = None
        self.watchers: dict[int, Watcher] = {}
        self._next_id = 0
        self._queue: deque[_Item] = deque()
        self._queued_bytes = 0
        self._unsynced: dict[Watcher, None] = {}
        self._progress_wanted = False
        self._closed = False

    # ------------------------------------------------------------------ requests
    def create(self, spec: WatchSpec) -> int:
        """Register a watcher; queues the created reply. Returns the watch id, or -1 when the
        creation failed (empty range / duplicate id: a refused :class:`Created` is queued)."""
        hub = self.hub
        cur = hub.store.current_revision
        key = spec.key or b"\0"
        end: bytes | None = spec.range_end or None
        if end == b"\0":
            end = b""
        reason = ""
        wid = spec.watch_id
        if end and key >= end:
            reason = EMPTY_RANGE_REASON
        elif wid == 0:
            while self._next_id in self.watchers:
                self._next_id += 1
            wid = self._next_id
            self._next_id += 1
        elif wid in self.watchers:
            reason = DUPLICATE_ID_REASON
        if reason:
            self._push(Created(-1, cur, reason))
            return -1
        start = spec.start_revision
        synced = start == 0 or start > cur
        next_rev = max(start, cur + 1) if synced else max(start, 1)
        w = Watcher(self, wid, key=key, end=end, next_rev=next_rev, spec=spec)
        self.watchers[wid] = w
        self._push(Created(wid, cur))
        if synced:
            hub._add_synced(w)
        else:
            self._unsynced[w] = None
            self._signal()
        return wid

    def cancel(self, watch_id: int) -> bool:
        """Cancel a watcher: queues :class:`Canceled`; an unknown id gets no reply."""
        w = self.watchers.pop(watch_id, None)
        if w is None:
            return False
        self._drop(w)
        self._push(Canceled(watch_id, self.hub.store.current_revision))
        return True

    def request_progress(self) -> None:
        """Queue a progress reply (watch id -1), deferred until every watcher of the stream
        is synced so that it is a valid bookmark."""
        if self._unsynced:
            self._progress_wanted = True
            self._signal()
        else:
            self._push(Progress(-1, self.hub.store.current_revision))

    def close(self) -> None:
        """Remove every watcher of the stream and forget it (the gRPC call ended)."""
        for w in self.watchers.values():
            self._drop(w)
        self.watchers.clear()
        self._queue.clear()
        self._queued_bytes = 0
        self._unsynced.clear()
        self._progress_wanted = False
        self._closed = True
        self.hub.streams.pop(self, None)

    # ------------------------------------------------------------------ output
    def pending(self, max_bytes: int = 4 * 1024 * 1024) -> list[WatchOutput]:
        """Drain ready items, in order, up to about ``max_bytes`` of values per call; then
        let unsynced watchers catch up from the revision log (bounded chunk each).

        Returns ``[]`` when nothing is ready now; if catch-up work remains (a chunk scanned
        history without a match), ``wake`` has already been called again, so a writer loop
        needs no extra logic."""
        out: list[WatchOutput] = []
        budget = max_bytes
        queue = self._queue
        store = self.hub.store
        w: Watcher
        hrev: int
        evs: list[KeyRec]
        size: int
        while queue and budget > 0:
            item = queue.popleft()
            if type(item) is not tuple:  # output items are NamedTuples, not plain tuples
                out.append(item)  # type: ignore[arg-type]
                continue
            w, hrev, evs, size = item  # type: ignore[misc]
            self._queued_bytes -= size
            budget -= size
            if w.stream is self and self.watchers.get(w.id) is w:
                if w.prev_kv:
                    out.append(batch(w, hrev, evs, store))
                else:
                    out.append(new(EventBatch, (w.id, hrev, evs, None, w.fragment)))
        if not queue:
            self._queued_bytes = 0
        if budget > 0 and not queue and self._unsynced:
            self._catch_up(out, budget)
        if self._progress_wanted and not self._unsynced and not queue:
            self._progress_wanted = False
            out.append(Progress(-1, store.current_revision))
            self._signal()
        return out

    # ------------------------------------------------------------------ internals
    def _signal(self) -> None:
        if self.wake is not None and not self._closed:
            self.wake()

    def _push(self, item: WatchOutput) -> None:
        self._queue.append(item)
        self._signal()

    def _drop(self, w: Watcher) -> None:
        if w.synced:
            self.hub._remove_synced(w)
        self._unsynced.pop(w, None)

    def _enqueue_events(self, w: Watcher, rev: int, evs: list[KeyRec]) -> bool:
        """Queue one revision for a synced watcher; False if the stream is full."""
        hub = self.hub
        if len(self._queue) >= hub.max_queued or self._queued_bytes >= hub.max_queued_bytes:
            return False
        size = events_size(evs)
        self._queue.append((w, rev, evs, size))
        self._queued_bytes += size
        return True

    def _make_unsynced(self, w: Watcher) -> None:
        self.hub._remove_synced(w)
        self._unsynced[w] = None

    def _catch_up(self, out: list[WatchOutput], budget: int) -> None:
        hub = self.hub
        store = hub.store
        cur = store.current_revision
        compact = store.compact_revision
        for w in list(self._unsynced):
            if budget <= 0:
                break
            if w.next_rev < compact:
                del self._unsynced[w]
                del self.watchers[w.id]
                out.append(CompactCanceled(w.id, compact))
                continue
            if w.next_rev > cur:
                del self._unsynced[w]
                hub._add_synced(w)
                continue
            # etcd's eventBatch: up to watchBatchMaxRevs distinct revisions that hold events
            # in the watcher's range (counted before NOPUT/NODELETE filtering), header =
            # the current revision; the rest follows in the next batch.
            evs: list[KeyRec] = []
            size = 0
            nrevs = 0
            max_revs = hub.catch_up_revisions
            r = w.next_rev
            stop = min(cur, r + hub.catch_up_scan - 1)
            contains = w.contains
            while r <= stop:
                names = store.log_keys(r)
                if names is not None and (
                    contains(names) if isinstance(names, bytes) else any(map(contains, names))
                ):
                    if nrevs >= max_revs:
                        break  # revision r starts the next batch
                    nrevs += 1
                    changes = store.log_entry(r)
                    assert changes is not None
                    found = select(w, changes)
                    if found:
                        evs.extend(found)
                        size += events_size(found)
                        if size >= hub.catch_up_bytes:
                            r += 1
                            break
                r += 1
            w.next_rev = r
            budget -= size
            if evs:
                out.append(batch(w, cur, evs, store))
            if r > cur:
                del self._unsynced[w]
                hub._add_synced(w)
        if self._unsynced:
            self._signal()


class WatchHub:
    """All watchers of one store: its commit observer (:meth:`on_commit`).

    Tunables (class defaults, per-instance overridable): ``max_queued`` items /
    ``max_queued_bytes`` of values per stream before its watchers go unsynced;
    ``catch_up_revisions``: distinct revisions with events per catch-up batch (etcd's
    watchBatchMaxRevs = 1000); ``catch_up_scan``: revisions scanned per watcher per drain;
    ``catch_up_bytes``: a safety cap on one catch-up batch (etcd has none).
    """

    max_queued = 1024
    max_queued_bytes = 8 * 1024 * 1024
    catch_up_revisions = 1000
    catch_up_scan = 200_000
    catch_up_bytes = 64 * 1024 * 1024

    def __init__(self, store: History) -> None:
        self.store = store
        self.streams: dict[WatchStream, None] = {}
        self._by_key: dict[bytes, dict[Watcher, None]] = {}
        # range watchers grouped by (key, end): many watchers of one prefix cost one check
        self._ranges: dict[tuple[bytes, bytes], dict[Watcher, None]] = {}
        self._nsynced = 0
        self.active = False
        """True if any watcher is synced (the store skips :meth:`on_commit` otherwise); an
        attribute, not a property: the store reads it on every commit."""
        store.set_observer(self)

    def open_stream(self, wake: Callable[[], None] | None = None) -> WatchStream:
        """A new per-RPC stream; ``wake`` is called when it has output."""
        s = WatchStream(self)
        s.wake = wake
        self.streams[s] = None
        return s

    def close_stream(self, stream: WatchStream) -> None:
        """Forget a stream and all its watchers (same as ``stream.close()``)."""
        stream.close()

    def watcher_count(self) -> tuple[int, int]:
        """``(synced, unsynced)`` watcher counts."""
        uns = sum(len(s._unsynced) for s in self.streams)
        return self._nsynced, uns

    def progress_notify(self) -> None:
        """Periodic progress (the server calls it every 10 min): a :class:`Progress` for
        every synced watcher created with ``progress_notify``."""
        cur = self.store.current_revision
        for s in self.streams:
            for w in s.watchers.values():
                if w.progress_notify and w.synced:
                    s._push(Progress(w.id, cur))

    def on_commit(self, rev: int, changes: Changes) -> None:
        """Deliver revision ``rev`` (flat ``(key, rec, ...)`` in op order) to synced watchers."""
        batches: dict[Watcher, list[KeyRec]] = {}
        by_key = self._by_key
        ranges = self._ranges
        for j in range(0, len(changes), 2):
            k = changes[j]
            rec = changes[j + 1]
            assert isinstance(k, bytes) and isinstance(rec, tuple)
            ws = by_key.get(k)
            if ws is not None:
                for w in ws:
                    add_event(batches, w, k, rec)
            if ranges:
                for (lo, hi), group in ranges.items():
                    if k >= lo and (not hi or k < hi):
                        for w in group:
                            add_event(batches, w, k, rec)
        for w, evs in batches.items():
            if w.next_rev > rev:
                continue  # a future start revision not reached yet
            w.next_rev = rev + 1
            if not evs:
                continue  # everything filtered out: nothing is sent
            s = w.stream
            if s._enqueue_events(w, rev, evs):
                s._signal()
            else:
                w.next_rev = rev
                s._make_unsynced(w)
                s._signal()
        # Synced watchers not touched by this revision advance implicitly: next_rev is only
        # read for unsynced watchers, and a watcher is made synced only at next_rev = cur + 1.
        del batches

    def on_restore(self, old_rev: int) -> None:
        """After a snapshot restore (``old_rev`` = the revision before it): every watcher
        catches up from the new history."""
        for s in self.streams:
            for w in s.watchers.values():
                if w.synced:
                    w.next_rev = max(w.next_rev, old_rev + 1)
                    self._remove_synced(w)
                    s._unsynced[w] = None
            if s._unsynced:
                s._signal()

    # ------------------------------------------------------------------ internals
    def _add_synced(self, w: Watcher) -> None:
        w.synced = True
        self._nsynced += 1
        self.active = True
        if w.end is None:
            self._by_key.setdefault(w.key, {})[w] = None
        else:
            self._ranges.setdefault((w.key, w.end), {})[w] = None

    def _remove_synced(self, w: Watcher) -> None:
        if not w.synced:
            return
        w.synced = False
        self._nsynced -= 1
        self.active = self._nsynced > 0
        if w.end is None:
            ws = self._by_key.get(w.key)
            if ws is not None:
                ws.pop(w, None)
                if not ws:
                    del self._by_key[w.key]
        else:
            rk = (w.key, w.end)
            group = self._ranges.get(rk)
            if group is not None:
                group.pop(w, None)
                if not group:
                    del self._ranges[rk]
