"""Open watches under auth: a watch whose user loses read access to its range (a role
or permission revoked, the user deleted) is cancelled at once, with etcd's
permission-denied cancel reason, and none of its events is sent after the change.

etcd 3.4 checks a watch only when it is created; coord also re-checks every open watch of
a stream each time the auth state changes (:attr:`coord.auth.AuthStore.listeners`), so
that a revoked permission stops the flow of data, as issue 17 asks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from coord.auth import READ, AuthStore
from coord.errors import CoordError
from coord.pb import rpc_pb2

DENIED_REASON = "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
"""etcd's cancel reason for a watch the user may not read (a created+canceled answer)."""


class OpenWatches:
    """The permitted watches of one Watch stream, by id, and the ones cancelled for a
    revoked permission. ``inject`` sends a request to the watch service as if the client
    had (the cancel of a revoked watch)."""

    def __init__(self, store: AuthStore, user: str, inject: asyncio.Queue[Any]) -> None:
        self.store = store
        self.user = user
        self.inject = inject
        self.creating: deque[tuple[bytes, bytes]] = deque()
        self.open: dict[int, tuple[bytes, bytes]] = {}
        self.revoked: set[int] = set()

    def __enter__(self) -> OpenWatches:
        self.store.listeners.add(self.recheck)
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.listeners.discard(self.recheck)

    def creating_watch(self, create: rpc_pb2.WatchCreateRequest) -> None:
        """A permitted create sent on to the service (answered in order)."""
        self.creating.append((create.key, create.range_end))

    def recheck(self) -> None:
        """After an auth change: cancel each open watch its user may no longer read."""
        if not self.store.enabled:
            return
        for watch_id, (key, end) in self.open.items():
            if watch_id in self.revoked:
                continue
            try:
                self.store.check(self.user, key, end, READ)
            except CoordError:
                self.revoked.add(watch_id)
                self.inject.put_nowait(rpc_pb2.WatchRequest(
                    cancel_request=rpc_pb2.WatchCancelRequest(watch_id=watch_id)))

    def outgoing(self, resp: rpc_pb2.WatchResponse) -> rpc_pb2.WatchResponse | None:
        """``resp`` as the client gets it, or None to drop it (events of a revoked
        watch between the change and its cancellation)."""
        wid = resp.watch_id
        if resp.created and self.creating:
            rng = self.creating.popleft()
            if not resp.canceled:
                self.open[wid] = rng
                try:  # revoked while it was being created: created, then cancelled
                    self.store.check(self.user, rng[0], rng[1], READ)
                except CoordError:
                    self.revoked.add(wid)
                    self.inject.put_nowait(rpc_pb2.WatchRequest(
                        cancel_request=rpc_pb2.WatchCancelRequest(watch_id=wid)))
            return resp
        if wid in self.revoked:
            if not resp.canceled:
                return None
            self.revoked.discard(wid)
            self.open.pop(wid, None)
            resp.cancel_reason = DENIED_REASON
            return resp
        if resp.canceled:
            self.open.pop(wid, None)
        return resp
