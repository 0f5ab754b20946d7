"""The watch hub: etcd's watchable store plus the per-stream watch-id bookkeeping of v3rpc.

Pure and synchronous (no asyncio, no threads): the gRPC layer owns the stream tasks.

How a gRPC Watch stream uses it::

    stream = applier.watch_hub.open_stream()      # one per Watch RPC
    wake = asyncio.Event()
    stream.wake = wake.set                         # called whenever the stream has output
    # reader task: for each WatchRequest from the client
    stream.handle(req)                             # create / cancel / progress; replies queued
    # writer task:
    while True:
        await wake.wait(); wake.clear()
        while batch := stream.pending():          # bounded batch of WatchResponse messages
            for resp in batch:
                fill_header(resp.header)           # cluster_id, member_id, raft_term only
                await context.write(resp)
    # on stream end (call cancelled or finished): stream.close()

Every ``WatchResponse`` comes out with ``header.revision`` set as etcd sets it (live events:
their revision; history catch-up batches, created/canceled/progress: the current revision;
compaction cancel: 0). The server adds cluster_id, member_id and raft_term.

Invariants:

* A watcher is either *synced* (``next_rev == current + 1``, or a future start revision) and
  registered in the hub's key/range indexes, or *unsynced* and listed only on its stream.
* Synced watchers get each committed revision as one response (events in op order) the moment
  it commits, unless their stream already holds ``max_queued`` responses or
  ``max_queued_bytes`` of values: then the watcher turns unsynced and later catches up from the
  revision log in bounded chunks. A write therefore never waits for a reader.
* Events reach a watcher in strictly increasing revision order, each exactly once; no event
  below its ``next_rev`` is ever delivered (etcd #15271, #20221), and a revision is never split
  across responses unless the watcher asked for ``fragment``.
* A watcher whose ``next_rev`` falls below the compact revision gets the compaction cancel
  (``canceled``, ``compact_revision``, header revision 0) and is removed. ``start_revision ==
  compact_rev`` is served in full, deletes included (etcd #19179, #18089).
* A progress reply is produced only when every watcher on the stream is synced and after every
  event queued before it, so no later event can be at or below its revision (etcd #15220).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from coord.pb import kv_pb2, rpc_pb2

if TYPE_CHECKING:
    from coord.mvcc.store import KVStore, Rec

DUPLICATE_ID_REASON = "mvcc: duplicate watch ID provided on the WatchStream"
EMPTY_RANGE_REASON = "mvcc: watcher range is empty"
MAX_RESPONSE_BYTES = 1536 * 1024 + 512 * 1024
"""etcd's max-request-bytes (1.5 MiB) + gRPC overhead: the fragment threshold."""

_PUT = kv_pb2.Event.PUT
_DELETE = kv_pb2.Event.DELETE
_NOPUT = rpc_pb2.WatchCreateRequest.NOPUT
_NODELETE = rpc_pb2.WatchCreateRequest.NODELETE


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
        self,
        stream: WatchStream,
        wid: int,
        *,
        key: bytes,
        end: bytes | None,
        next_rev: int,
        req: rpc_pb2.WatchCreateRequest,
    ) -> None:
        self.stream = stream
        self.id = wid
        self.key = key
        self.end = end
        self.next_rev = next_rev
        self.prev_kv = req.prev_kv
        self.fragment = req.fragment
        self.progress_notify = req.progress_notify
        filters = req.filters
        self.no_put = _NOPUT in filters
        self.no_delete = _NODELETE in filters
        self.synced = False

    def contains(self, k: bytes) -> bool:
        """True if ``k`` is in the watched range."""
        end = self.end
        if end is None:
            return k == self.key
        return k >= self.key and (not end or k < end)


# Queue items: a ready control response, or (watcher, header_rev, [(key, rec), ...]).
_Item = rpc_pb2.WatchResponse | tuple[Watcher, int, list[tuple[bytes, "Rec"]]]


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
    def handle(self, req: rpc_pb2.WatchRequest) -> None:
        """Dispatch one client WatchRequest (create / cancel / progress)."""
        which = req.WhichOneof("request_union")
        if which == "create_request":
            self.create(req.create_request)
        elif which == "cancel_request":
            self.cancel(req.cancel_request.watch_id)
        elif which == "progress_request":
            self.request_progress()

    def create(self, req: rpc_pb2.WatchCreateRequest) -> int:
        """Register a watcher; queues the created reply. Returns the watch id, or -1 when the
        creation failed (empty range / duplicate id: a created+canceled reply is queued)."""
        hub = self.hub
        cur = hub.store.current_revision
        key = req.key or b"\0"
        end: bytes | None = req.range_end or None
        if end == b"\0":
            end = b""
        reason = ""
        wid = req.watch_id
        if end and key >= end:
            reason = EMPTY_RANGE_REASON
        elif wid == 0:
            while self._next_id in self.watchers:
                self._next_id += 1
            wid = self._next_id
            self._next_id += 1
        elif wid in self.watchers:
            reason = DUPLICATE_ID_REASON
        resp = rpc_pb2.WatchResponse(created=True)
        resp.header.revision = cur
        if reason:
            resp.watch_id = -1
            resp.canceled = True
            resp.cancel_reason = reason
            self._push(resp)
            return -1
        resp.watch_id = wid
        start = req.start_revision
        synced = start == 0 or start > cur
        next_rev = max(start, cur + 1) if synced else max(start, 1)
        w = Watcher(self, wid, key=key, end=end, next_rev=next_rev, req=req)
        self.watchers[wid] = w
        self._push(resp)
        if synced:
            hub._add_synced(w)
        else:
            self._unsynced[w] = None
            self._signal()
        return wid

    def cancel(self, watch_id: int) -> bool:
        """Cancel a watcher: queues ``{watch_id, canceled}``; an unknown id gets no reply."""
        w = self.watchers.pop(watch_id, None)
        if w is None:
            return False
        self._drop(w)
        resp = rpc_pb2.WatchResponse(watch_id=watch_id, canceled=True)
        resp.header.revision = self.hub.store.current_revision
        self._push(resp)
        return True

    def request_progress(self) -> None:
        """Queue a progress reply ``{header.revision, watch_id: -1}``, deferred until every
        watcher of the stream is synced so that it is a valid bookmark."""
        if self._unsynced:
            self._progress_wanted = True
            self._signal()
        else:
            self._push_progress()

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
    def pending(self, max_bytes: int = 4 * 1024 * 1024) -> list[rpc_pb2.WatchResponse]:
        """Drain ready responses, in order, up to about ``max_bytes`` of values per call;
        then let unsynced watchers catch up from the revision log (bounded chunk each).

        Returns ``[]`` when nothing is ready now; if catch-up work remains (a chunk scanned
        history without a match), ``wake`` has already been called again, so the writer loop
        shown in the module docstring needs no extra logic."""
        out: list[rpc_pb2.WatchResponse] = []
        budget = max_bytes
        queue = self._queue
        store = self.hub.store
        while queue and budget > 0:
            item = queue.popleft()
            if isinstance(item, rpc_pb2.WatchResponse):
                out.append(item)
                continue
            w, hrev, evs = item
            size = _events_size(evs)
            self._queued_bytes -= size
            budget -= size
            if w.stream is self and self.watchers.get(w.id) is w:
                self._materialize(w, hrev, evs, store, out)
        if not queue:
            self._queued_bytes = 0
        if budget > 0 and not queue and self._unsynced:
            self._catch_up(out, budget)
        if self._progress_wanted and not self._unsynced and not queue:
            self._progress_wanted = False
            self._push_progress()
            out.append(queue.popleft())  # type: ignore[arg-type]
        return out

    @property
    def has_pending(self) -> bool:
        """True if :meth:`pending` would return something now."""
        return bool(self._queue) or bool(self._unsynced) or self._progress_wanted

    # ------------------------------------------------------------------ internals
    def _signal(self) -> None:
        if self.wake is not None and not self._closed:
            self.wake()

    def _push(self, resp: rpc_pb2.WatchResponse) -> None:
        self._queue.append(resp)
        self._signal()

    def _push_progress(self) -> None:
        resp = rpc_pb2.WatchResponse(watch_id=-1)
        resp.header.revision = self.hub.store.current_revision
        self._push(resp)

    def _drop(self, w: Watcher) -> None:
        if w.synced:
            self.hub._remove_synced(w)
        self._unsynced.pop(w, None)

    def _enqueue_events(self, w: Watcher, rev: int, evs: list[tuple[bytes, Rec]]) -> bool:
        """Queue one revision for a synced watcher; False if the stream is full."""
        hub = self.hub
        if len(self._queue) >= hub.max_queued or self._queued_bytes >= hub.max_queued_bytes:
            return False
        self._queue.append((w, rev, evs))
        self._queued_bytes += _events_size(evs)
        return True

    def _make_unsynced(self, w: Watcher) -> None:
        self.hub._remove_synced(w)
        self._unsynced[w] = None

    def _filter(self, w: Watcher, changes: tuple[bytes | Rec, ...]) -> list[tuple[bytes, Rec]]:
        evs: list[tuple[bytes, Rec]] = []
        no_put, no_delete = w.no_put, w.no_delete
        for j in range(0, len(changes), 2):
            k = changes[j]
            assert isinstance(k, bytes)
            if w.contains(k):
                rec = changes[j + 1]
                assert isinstance(rec, tuple)
                if (no_put and rec[4] is not None) or (no_delete and rec[4] is None):
                    continue
                evs.append((k, rec))
        return evs

    def _catch_up(self, out: list[rpc_pb2.WatchResponse], budget: int) -> None:
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
                resp = rpc_pb2.WatchResponse(
                    watch_id=w.id, canceled=True, compact_revision=compact
                )
                resp.header.SetInParent()
                out.append(resp)
                continue
            if w.next_rev > cur:
                del self._unsynced[w]
                hub._add_synced(w)
                continue
            # etcd's eventBatch: up to watchBatchMaxRevs distinct revisions that hold events
            # in the watcher's range (counted before NOPUT/NODELETE filtering), header =
            # the current revision; the rest follows in the next batch.
            evs: list[tuple[bytes, Rec]] = []
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
                    found = self._filter(w, changes)
                    if found:
                        evs.extend(found)
                        size += _events_size(found)
                        if size >= hub.catch_up_bytes:
                            r += 1
                            break
                r += 1
            w.next_rev = r
            budget -= size
            if evs:
                self._materialize(w, cur, evs, store, out)
            if r > cur:
                del self._unsynced[w]
                hub._add_synced(w)
        if self._unsynced:
            self._signal()

    def _materialize(
        self,
        w: Watcher,
        hrev: int,
        evs: list[tuple[bytes, Rec]],
        store: KVStore,
        out: list[rpc_pb2.WatchResponse],
    ) -> None:
        resp = rpc_pb2.WatchResponse(watch_id=w.id)
        resp.header.revision = hrev
        add = resp.events.add
        want_prev = w.prev_kv
        for k, rec in evs:
            v = rec[4]
            if v is None:
                ev = add(type=_DELETE)
                ev.kv.key = k
                ev.kv.mod_revision = rec[0]
            else:
                ev = add()
                kv = ev.kv
                kv.key = k
                kv.create_revision = rec[1]
                kv.mod_revision = rec[0]
                kv.version = rec[2]
                kv.value = v
                kv.lease = rec[3]
            if want_prev and rec[1] != rec[0]:
                prev = store.prev_of(k, rec[0])
                if prev is not None:
                    p = ev.prev_kv
                    p.key = k
                    p.create_revision = prev[1]
                    p.mod_revision = prev[0]
                    p.version = prev[2]
                    p.value = prev[4]  # type: ignore[assignment]
                    p.lease = prev[3]
        if w.fragment and len(resp.events) >= 2 and resp.ByteSize() >= MAX_RESPONSE_BYTES:
            out.extend(_fragments(resp))
        else:
            out.append(resp)


def _events_size(evs: list[tuple[bytes, Rec]]) -> int:
    n = 0
    for k, rec in evs:
        v = rec[4]
        n += len(k) + 32 + (len(v) if v is not None else 0)
    return n


def _fragments(resp: rpc_pb2.WatchResponse) -> list[rpc_pb2.WatchResponse]:
    """etcd's sendFragments: fill each part until adding one more event would reach the
    limit (a part always holds at least one event); every part but the last has fragment."""
    parts: list[rpc_pb2.WatchResponse] = []
    events = list(resp.events)
    base = rpc_pb2.WatchResponse()
    base.CopyFrom(resp)
    del base.events[:]
    base.fragment = True
    base_size = base.ByteSize()
    idx = 0
    while True:
        cur = rpc_pb2.WatchResponse()
        cur.CopyFrom(base)
        size = base_size
        n = 0
        while idx < len(events):
            ev = events[idx]
            es = ev.ByteSize()
            esz = 1 + _varint_len(es) + es
            if n >= 1 and size + esz >= MAX_RESPONSE_BYTES:
                break
            cur.events.append(ev)
            size += esz
            n += 1
            idx += 1
        if idx == len(events):
            cur.fragment = False
            parts.append(cur)
            return parts
        parts.append(cur)


def _varint_len(n: int) -> int:
    length = 1
    while n >= 0x80:
        n >>= 7
        length += 1
    return length


class WatchHub:
    """All watchers of one store. The store calls :meth:`notify` on every commit.

    Tunables (class defaults, per-instance overridable): ``max_queued`` responses /
    ``max_queued_bytes`` of values per stream before its watchers go unsynced;
    ``catch_up_revisions``: distinct revisions with events per catch-up response (etcd's
    watchBatchMaxRevs = 1000); ``catch_up_scan``: revisions scanned per watcher per drain;
    ``catch_up_bytes``: a safety cap on one catch-up response (etcd has none).
    """

    max_queued = 1024
    max_queued_bytes = 8 * 1024 * 1024
    catch_up_revisions = 1000
    catch_up_scan = 200_000
    catch_up_bytes = 64 * 1024 * 1024

    def __init__(self, store: KVStore) -> None:
        self.store = store
        self.streams: dict[WatchStream, None] = {}
        self._by_key: dict[bytes, dict[Watcher, None]] = {}
        # range watchers grouped by (key, end): many watchers of one prefix cost one check
        self._ranges: dict[tuple[bytes, bytes], dict[Watcher, None]] = {}
        self._nsynced = 0

    @property
    def active(self) -> bool:
        """True if any watcher is synced (the store skips notify otherwise)."""
        return self._nsynced > 0

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
        """Periodic progress (the server calls it every 10 min): ``{header.revision,
        watch_id}`` for every synced watcher created with ``progress_notify``."""
        cur = self.store.current_revision
        for s in self.streams:
            for w in s.watchers.values():
                if w.progress_notify and w.synced:
                    resp = rpc_pb2.WatchResponse(watch_id=w.id)
                    resp.header.revision = cur
                    s._push(resp)

    def notify(self, rev: int, changes: tuple[bytes | Rec, ...]) -> None:
        """Deliver revision ``rev`` (flat ``(key, rec, ...)`` in op order) to synced watchers."""
        batches: dict[Watcher, list[tuple[bytes, Rec]]] = {}
        by_key = self._by_key
        ranges = self._ranges
        for j in range(0, len(changes), 2):
            k = changes[j]
            rec = changes[j + 1]
            assert isinstance(k, bytes) and isinstance(rec, tuple)
            ws = by_key.get(k)
            if ws is not None:
                for w in ws:
                    _add_event(batches, w, k, rec)
            if ranges:
                for (lo, hi), group in ranges.items():
                    if k >= lo and (not hi or k < hi):
                        for w in group:
                            _add_event(batches, w, k, rec)
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
        if w.end is None:
            self._by_key.setdefault(w.key, {})[w] = None
        else:
            self._ranges.setdefault((w.key, w.end), {})[w] = None

    def _remove_synced(self, w: Watcher) -> None:
        if not w.synced:
            return
        w.synced = False
        self._nsynced -= 1
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


def _add_event(
    batches: dict[Watcher, list[tuple[bytes, Rec]]], w: Watcher, k: bytes, rec: Rec
) -> None:
    if (w.no_put and rec[4] is not None) or (w.no_delete and rec[4] is None):
        batches.setdefault(w, [])
        return
    lst = batches.get(w)
    if lst is None:
        batches[w] = [(k, rec)]
    else:
        lst.append((k, rec))
