"""etcdserverpb.Watch: a bidi stream per client, many watchers per stream.

The watch hub (``coord.mvcc.watch``) is pure and speaks plain named types; this adapter
maps WatchRequests to hub calls and the hub's output to WatchResponses
(:class:`RpcWatchStream`), and owns the two tasks of a stream: a reader that hands each
client request to the hub, and the writer (the handler itself) that drains the hub's ready
output whenever it is woken. A client half-closing its side does not end the stream: events
keep flowing until the call is cancelled, as in etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import structlog

from coord.api.ports import Watches
from coord.mvcc.watch import WatchHub, WatchStream
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
from coord.mvcc.watcher import Watcher
from coord.pb import kv_pb2, rpc_pb2
from coord.rpc.handlers import Context as Ctx

log = structlog.get_logger("coord.watch")

PROGRESS_INTERVAL = 600.0
"""etcd's default interval for progress notifications to watchers that asked for them."""
MAX_RESPONSE_BYTES = 1536 * 1024 + 512 * 1024
"""etcd's max-request-bytes (1.5 MiB) + gRPC overhead: the fragment threshold."""

__all__ = ["DUPLICATE_ID_REASON", "EMPTY_RANGE_REASON", "MAX_RESPONSE_BYTES", "RpcWatchStream",
           "WatchService", "open_stream"]

_DELETE = kv_pb2.Event.DELETE
_NOPUT = rpc_pb2.WatchCreateRequest.NOPUT
_NODELETE = rpc_pb2.WatchCreateRequest.NODELETE


def spec_of(req: rpc_pb2.WatchCreateRequest) -> WatchSpec:
    """The hub's view of a WatchCreateRequest."""
    filters = req.filters
    return WatchSpec(req.key, req.range_end, req.start_revision, req.watch_id, req.prev_kv,
                     req.fragment, req.progress_notify, _NOPUT in filters, _NODELETE in filters)


def responses(item: WatchOutput, out: list[rpc_pb2.WatchResponse]) -> None:
    """Append the WatchResponse(s) of one hub output item to ``out``, with
    ``header.revision`` set as etcd sets it (the server adds cluster_id, member_id and
    raft_term)."""
    if type(item) is EventBatch:
        _events_response(item, out)
        return
    resp = rpc_pb2.WatchResponse(watch_id=item.watch_id)
    if type(item) is Created:
        resp.created = True
        resp.header.revision = item.revision
        if item.cancel_reason:
            resp.canceled = True
            resp.cancel_reason = item.cancel_reason
    elif type(item) is Canceled:
        resp.canceled = True
        resp.header.revision = item.revision
    elif type(item) is CompactCanceled:
        resp.canceled = True
        resp.compact_revision = item.compact_revision
        resp.header.SetInParent()
    else:
        assert type(item) is Progress
        resp.header.revision = item.revision
    out.append(resp)


def _events_response(b: EventBatch, out: list[rpc_pb2.WatchResponse]) -> None:
    # The hot path of a watch: records are unpacked by name once (faster than field reads).
    watch_id, revision, events, prevs, fragment = b
    resp = rpc_pb2.WatchResponse(watch_id=watch_id)
    resp.header.revision = revision
    add = resp.events.add
    for i, (k, rec) in enumerate(events):
        mod_rev, create_rev, version, lease, value = rec
        if value is None:
            ev = add(type=_DELETE)
            ev.kv.key = k
            ev.kv.mod_revision = mod_rev
        else:
            ev = add()
            kv = ev.kv
            kv.key = k
            kv.create_revision = create_rev
            kv.mod_revision = mod_rev
            kv.version = version
            kv.value = value
            kv.lease = lease
        if prevs is not None:
            prev = prevs[i]
            if prev is not None:
                mod_rev, create_rev, version, lease, value = prev
                p = ev.prev_kv
                p.key = k
                p.create_revision = create_rev
                p.mod_revision = mod_rev
                p.version = version
                p.value = value  # type: ignore[assignment]
                p.lease = lease
    if fragment and len(resp.events) >= 2 and resp.ByteSize() >= MAX_RESPONSE_BYTES:
        out.extend(_fragments(resp))
    else:
        out.append(resp)


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


class RpcWatchStream:
    """A hub stream (one Watch RPC) speaking WatchRequest / WatchResponse."""

    __slots__ = ("stream",)

    def __init__(self, stream: WatchStream) -> None:
        self.stream = stream

    @property
    def watchers(self) -> dict[int, Watcher]:
        """The stream's live watches by id."""
        return self.stream.watchers

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
        """See :meth:`WatchStream.create`."""
        return self.stream.create(spec_of(req))

    def cancel(self, watch_id: int) -> bool:
        """See :meth:`WatchStream.cancel`."""
        return self.stream.cancel(watch_id)

    def request_progress(self) -> None:
        """See :meth:`WatchStream.request_progress`."""
        self.stream.request_progress()

    def close(self) -> None:
        """See :meth:`WatchStream.close`."""
        self.stream.close()

    def pending(self, max_bytes: int = 4 * 1024 * 1024) -> list[rpc_pb2.WatchResponse]:
        """The ready output as WatchResponses (see :meth:`WatchStream.pending`)."""
        out: list[rpc_pb2.WatchResponse] = []
        for item in self.stream.pending(max_bytes):
            if type(item) is EventBatch:  # the common item, without the dispatch call
                _events_response(item, out)
            else:
                responses(item, out)
        return out


def open_stream(hub: WatchHub, wake: Callable[[], None] | None = None) -> RpcWatchStream:
    """A new Watch RPC stream on ``hub``; ``wake`` is called when it has output."""
    return RpcWatchStream(hub.open_stream(wake))


class WatchService:
    def __init__(self, core: Watches) -> None:
        self.core = core
        self._progress_task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """Called after each applied batch. The hub wakes the affected streams itself."""

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            self.core.watch_hub.progress_notify()

    async def close(self) -> None:
        if self._progress_task is not None:
            self._progress_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._progress_task

    async def Watch(self, request_iterator: AsyncIterator[rpc_pb2.WatchRequest],
                    context: Ctx) -> AsyncIterator[rpc_pb2.WatchResponse]:
        if self._progress_task is None:
            self._progress_task = asyncio.get_running_loop().create_task(self._progress_loop())
        wake = asyncio.Event()
        stream = open_stream(self.core.watch_hub, wake.set)

        async def read_requests() -> None:
            try:
                async for req in request_iterator:
                    stream.handle(req)
            except asyncio.CancelledError:
                pass

        reader = asyncio.get_running_loop().create_task(read_requests())
        try:
            while True:
                await wake.wait()
                wake.clear()
                while batch := stream.pending():
                    for resp in batch:
                        self.core.fill_header(resp.header, revision=False)
                        yield resp
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            stream.close()
