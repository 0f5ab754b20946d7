"""An asyncio etcd-v3 client: KV, Txn, Watch (auto-resume), Lease (keepalive), failover.

It talks to any etcd-v3 endpoint: a coord member or a real etcd. The scheduler uses only
this module to reach its store, which is why it runs unchanged on either.

Failover rules (what is retried, where):
- Reads (Range, read-only status calls), keepalives and watches are idempotent: on a
  transport failure or ``Unavailable`` they move to the next endpoint and retry until the
  call's deadline.
- Mutations (Put, DeleteRange, Txn, lease grant/revoke, compact) are retried only when the
  request certainly did not reach a server (the connection failed, or the server said it
  has no leader before proposing). Otherwise the error reaches the caller, who must treat
  the outcome as unknown (the scheduler's txns are built so that a retry is harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import structlog

from coord.aiotools import within
from coord.client.errors import (
    ClientError,
    CompactedError,
    LeaseNotFoundError,
    ServerError,
    UnavailableError,
    WatchCanceledError,
    from_rpc_error,
)
from coord.client.txn import Key, prefix_end, range_request, to_bytes
from coord.client.types import (
    DeleteResult,
    Event,
    Header,
    KeyValue,
    LeaseGrant,
    LeaseTTL,
    Member,
    OpResult,
    PutResult,
    RangeResult,
    Status,
    TxnResult,
    WatchBatch,
)
from coord.pb import kv_pb2, rpc_pb2, rpc_pb2_grpc

log = structlog.get_logger("coord.client")

_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from the stubs

T = TypeVar("T")

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.enable_retries", 0),
]

# Messages for which the request provably never reached the state machine.
_SAFE_TO_RETRY = ("etcdserver: no leader", "etcdserver: not leader", "etcdserver: server stopped")


def _header(h: rpc_pb2.ResponseHeader) -> Header:
    return Header(h.cluster_id, h.member_id, h.revision, h.raft_term)


def _kv_or_none(has: bool, kv: kv_pb2.KeyValue) -> KeyValue | None:
    return KeyValue.from_pb(kv) if has else None


CLOSE_GRACE = 30.0
"""Seconds a replaced channel stays open for the calls still running on it."""


class _CancelledRpc(grpc.aio.AioRpcError):
    """An RPC cancelled under its caller (its channel was closed): outcome unknown."""

    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.CANCELLED, grpc.aio.Metadata(),
                         grpc.aio.Metadata(), details="rpc cancelled (channel closed)",
                         debug_error_string="")


def _caller_cancelled() -> bool:
    """True when the running task itself is being cancelled (as opposed to an RPC it was
    awaiting having been cancelled under it, which grpc.aio also reports as CancelledError)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def _transport_failure(err: grpc.aio.AioRpcError) -> bool:
    """True when the endpoint itself failed (worth trying another), not when a reachable
    server answered with an etcd error such as "leader changed"."""
    details = err.details() or ""
    return not details.startswith("etcdserver:")


def _not_sent(err: grpc.aio.AioRpcError) -> bool:
    """True when the failure proves the request was not handed to the server's log."""
    if err.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    details = err.details() or ""
    return details in _SAFE_TO_RETRY or "failed to connect" in details.lower() or (
        "connection refused" in details.lower()
    )


ChannelFactory = Callable[[str], Any]
"""An endpoint (``host:port``) → a channel to it with ``grpc.aio.Channel``'s interface, or
None to dial it over the network. The program's composition root passes one: an agent's
(``CoordServer.channels``) reaches the member in the same process without a socket, so
this package needs no server code to do that."""


def network_channel(address: str) -> Any:
    """A grpc.aio channel to ``address`` with the client's options."""
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)


class _Endpoint:
    __slots__ = ("address", "channel", "cluster", "kv", "lease", "maint", "watch")

    def __init__(self, address: str, channels: ChannelFactory | None = None) -> None:
        self.address = address
        channel = channels(address) if channels is not None else None
        self.channel = channel if channel is not None else network_channel(address)
        # The generated stubs are typed for the sync API; on an aio channel every method
        # returns an awaitable or a stream call, so they are held as Any.
        self.kv: Any = rpc_pb2_grpc.KVStub(self.channel)
        self.lease: Any = rpc_pb2_grpc.LeaseStub(self.channel)
        self.maint: Any = rpc_pb2_grpc.MaintenanceStub(self.channel)
        self.cluster: Any = rpc_pb2_grpc.ClusterStub(self.channel)
        self.watch: Any = rpc_pb2_grpc.WatchStub(self.channel)


def _convert_range(r: rpc_pb2.RangeResponse) -> RangeResult:
    return RangeResult(_header(r.header), [KeyValue.from_pb(kv) for kv in r.kvs], r.count,
                       r.more)


def _convert_op(r: rpc_pb2.ResponseOp) -> OpResult:
    which = r.WhichOneof("response")
    if which == "response_range":
        return _convert_range(r.response_range)
    if which == "response_put":
        p = r.response_put
        return PutResult(_header(p.header), _kv_or_none(p.HasField("prev_kv"), p.prev_kv))
    if which == "response_delete_range":
        d = r.response_delete_range
        return DeleteResult(_header(d.header), d.deleted, [KeyValue.from_pb(k) for k in d.prev_kvs])
    t = r.response_txn
    return TxnResult(_header(t.header), t.succeeded, [_convert_op(x) for x in t.responses])


class Client:
    """An etcd-v3 client over one or more endpoints (``host:port``).

    Use as ``async with Client(["127.0.0.1:2379"]) as c: ...``. ``timeout`` bounds each
    call, retries included. ``channels`` makes the channel to an endpoint
    (:data:`ChannelFactory`); without it, or where it returns None, a network one.
    """

    def __init__(self, endpoints: Sequence[str] | str, timeout: float = 5.0,
                 channels: ChannelFactory | None = None) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e]
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        self.endpoints = [e.removeprefix("http://") for e in endpoints]
        self.timeout = timeout
        self._index = 0
        self._ep: _Endpoint | None = None
        self._closed = False
        self._closing: set[Any] = set()
        self._channels = channels

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._ep is not None:
            await self._ep.channel.close(None)
            self._ep = None
        for channel in list(self._closing):
            await channel.close(None)
        self._closing.clear()

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._index]

    def _current(self) -> _Endpoint:
        if self._closed:
            raise ClientError("client is closed")
        if self._ep is None:
            address = self.endpoints[self._index]
            self._ep = _Endpoint(address, self._channels)
        return self._ep

    async def _rotate(self, failed: _Endpoint) -> None:
        """Move on to the next endpoint. The old channel is closed in the background with
        a grace period: closing it at once would cancel every other call still running on
        it (grpc.aio surfaces that as CancelledError in the callers' tasks)."""
        if self._ep is failed:
            self._index = (self._index + 1) % len(self.endpoints)
            self._ep = None
            channel = failed.channel
            self._closing.add(channel)
            task = asyncio.get_running_loop().create_task(channel.close(CLOSE_GRACE))
            task.add_done_callback(lambda _t: self._closing.discard(channel))

    async def _call(self, fn: Callable[[_Endpoint, float], Awaitable[T]], *,
                    idempotent: bool, timeout: float | None = None) -> T:
        """Run ``fn`` against the current endpoint, failing over as the module doc says."""
        budget = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        attempt = 0
        while True:
            ep = self._current()
            remaining = deadline - time.monotonic()
            err: grpc.aio.AioRpcError
            try:
                return await fn(ep, max(remaining, 0.05))
            except asyncio.CancelledError:
                if _caller_cancelled():
                    raise
                # The RPC itself was cancelled (its channel closed): outcome unknown.
                err = _CancelledRpc()
            except grpc.aio.AioRpcError as rpc_err:
                err = rpc_err
            if err.code() not in (grpc.StatusCode.UNAVAILABLE,
                                  grpc.StatusCode.DEADLINE_EXCEEDED,
                                  grpc.StatusCode.CANCELLED):
                raise from_rpc_error(err) from None
            if _transport_failure(err):
                await self._rotate(ep)
            if not (idempotent or _not_sent(err)) or time.monotonic() >= deadline:
                raise from_rpc_error(err) from None
            attempt += 1
            await asyncio.sleep(min(0.025 * attempt, 0.25))  # backoff between endpoints

    # ---------------------------------------------------------------- KV
    async def get(self, key: Key, *, prefix: bool = False, range_end: Key | None = None,
                  revision: int = 0, limit: int = 0, serializable: bool = False,
                  keys_only: bool = False, count_only: bool = False) -> RangeResult:
        req = range_request(key, prefix=prefix, range_end=range_end, revision=revision,
                            limit=limit, serializable=serializable, keys_only=keys_only,
                            count_only=count_only)
        return await self.range(req)

    async def range(self, req: rpc_pb2.RangeRequest) -> RangeResult:
        async def run(ep: _Endpoint, t: float) -> RangeResult:
            return _convert_range(await ep.kv.Range(req, timeout=t))
        return await self._call(run, idempotent=True)

    async def get_one(self, key: Key) -> KeyValue | None:
        r = await self.get(key)
        return r.kvs[0] if r.kvs else None

    async def put(self, key: Key, value: Key, *, lease: int = 0,
                  prev_kv: bool = False) -> PutResult:
        req = rpc_pb2.PutRequest(key=to_bytes(key), value=to_bytes(value), lease=lease,
                                 prev_kv=prev_kv)

        async def run(ep: _Endpoint, t: float) -> PutResult:
            r = await ep.kv.Put(req, timeout=t)
            return PutResult(_header(r.header), _kv_or_none(r.HasField("prev_kv"), r.prev_kv))
        return await self._call(run, idempotent=False)

    async def delete(self, key: Key, *, prefix: bool = False, range_end: Key | None = None,
                     prev_kv: bool = False) -> DeleteResult:
        k = to_bytes(key)
        end = prefix_end(k) if prefix else (to_bytes(range_end) if range_end else b"")
        req = rpc_pb2.DeleteRangeRequest(key=k, range_end=end, prev_kv=prev_kv)

        async def run(ep: _Endpoint, t: float) -> DeleteResult:
            r = await ep.kv.DeleteRange(req, timeout=t)
            return DeleteResult(_header(r.header), r.deleted,
                                [KeyValue.from_pb(x) for x in r.prev_kvs])
        return await self._call(run, idempotent=False)

    async def txn(self, compare: Sequence[rpc_pb2.Compare],
                  success: Sequence[rpc_pb2.RequestOp] = (),
                  failure: Sequence[rpc_pb2.RequestOp] = ()) -> TxnResult:
        req = rpc_pb2.TxnRequest(compare=list(compare), success=list(success),
                                 failure=list(failure))
        read_only = all(op.WhichOneof("request") == "request_range"
                        for op in (*success, *failure))

        async def run(ep: _Endpoint, t: float) -> TxnResult:
            r = await ep.kv.Txn(req, timeout=t)
            return TxnResult(_header(r.header), r.succeeded, [_convert_op(x) for x in r.responses])
        return await self._call(run, idempotent=read_only)

    async def compact(self, revision: int, physical: bool = False) -> int:
        req = rpc_pb2.CompactionRequest(revision=revision, physical=physical)

        async def run(ep: _Endpoint, t: float) -> int:
            return int((await ep.kv.Compact(req, timeout=t)).header.revision)
        return await self._call(run, idempotent=False)

    # ---------------------------------------------------------------- Lease
    async def grant(self, ttl: int, lease_id: int = 0) -> LeaseGrant:
        req = rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lease_id)

        async def run(ep: _Endpoint, t: float) -> LeaseGrant:
            r = await ep.lease.LeaseGrant(req, timeout=t)
            if r.error:
                raise ServerError(grpc.StatusCode.UNKNOWN, r.error)
            return LeaseGrant(r.ID, r.TTL, r.header.revision)
        return await self._call(run, idempotent=False)

    async def revoke(self, lease_id: int) -> int:
        req = rpc_pb2.LeaseRevokeRequest(ID=lease_id)

        async def run(ep: _Endpoint, t: float) -> int:
            return int((await ep.lease.LeaseRevoke(req, timeout=t)).header.revision)
        return await self._call(run, idempotent=False)

    async def time_to_live(self, lease_id: int, keys: bool = False) -> LeaseTTL:
        req = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=keys)

        async def run(ep: _Endpoint, t: float) -> LeaseTTL:
            r = await ep.lease.LeaseTimeToLive(req, timeout=t)
            return LeaseTTL(r.ID, r.TTL, r.grantedTTL, list(r.keys))
        return await self._call(run, idempotent=True)

    async def leases(self) -> list[int]:
        async def run(ep: _Endpoint, t: float) -> list[int]:
            r = await ep.lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=t)
            return [x.ID for x in r.leases]
        return await self._call(run, idempotent=True)

    async def keepalive_once(self, lease_id: int) -> int:
        """Renew once; returns the TTL, raises :class:`LeaseNotFoundError` if it is gone."""
        async def run(ep: _Endpoint, t: float) -> int:
            call = ep.lease.LeaseKeepAlive(timeout=t)
            try:
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
                resp = await call.read()
            finally:
                call.cancel()
            if resp is _EOF:
                raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "keepalive stream closed")
            assert isinstance(resp, rpc_pb2.LeaseKeepAliveResponse)
            if resp.TTL <= 0:
                raise LeaseNotFoundError(grpc.StatusCode.NOT_FOUND,
                                         "etcdserver: requested lease not found")
            return int(resp.TTL)
        return await self._call(run, idempotent=True)

    def keep_alive(self, lease_id: int, ttl: int, granted_at: float | None = None) -> KeepAlive:
        """Start renewing ``lease_id`` in the background every ``ttl/3`` seconds.
        ``granted_at``: the monotonic time the grant request was sent (default: now)."""
        return KeepAlive(self, lease_id, ttl, granted_at)

    # ---------------------------------------------------------------- Watch
    async def watch(self, key: Key, *, prefix: bool = False, range_end: Key | None = None,
                    start_revision: int = 0, prev_kv: bool = False,
                    no_put: bool = False, no_delete: bool = False,
                    progress_notify: bool = False) -> AsyncIterator[WatchBatch]:
        """Yield event batches; resume from the last seen revision after a broken stream.

        Raises :class:`CompactedError` (with ``compact_revision``) when the requested start
        has been compacted: the caller must re-list and watch again from a fresh revision.
        """
        k = to_bytes(key)
        end = prefix_end(k) if prefix else (to_bytes(range_end) if range_end else b"")
        filters: list[Any] = []
        if no_put:
            filters.append(rpc_pb2.WatchCreateRequest.NOPUT)
        if no_delete:
            filters.append(rpc_pb2.WatchCreateRequest.NODELETE)
        next_rev = start_revision
        failures = 0
        while True:
            ep = self._current()
            create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                key=k, range_end=end, start_revision=next_rev, prev_kv=prev_kv,
                filters=filters, progress_notify=progress_notify))
            call = ep.watch.Watch(metadata=(("hasleader", "true"),))
            try:
                await call.write(create)
                while True:
                    resp = await call.read()
                    if resp is _EOF:
                        raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "watch stream ended")
                    assert isinstance(resp, rpc_pb2.WatchResponse)
                    failures = 0
                    if resp.compact_revision:
                        raise CompactedError(
                            grpc.StatusCode.OUT_OF_RANGE,
                            "etcdserver: mvcc: required revision has been compacted",
                            resp.compact_revision)
                    if resp.canceled:
                        raise WatchCanceledError(resp.cancel_reason or "watch canceled")
                    if resp.created and next_rev == 0:
                        # Pin "now" so a resume never skips events after creation.
                        next_rev = resp.header.revision + 1
                    if not resp.events:
                        if not resp.created and resp.header.revision:
                            yield WatchBatch(resp.header.revision, [])
                        continue
                    events = [
                        Event(int(e.type), KeyValue.from_pb(e.kv),
                              _kv_or_none(e.HasField("prev_kv"), e.prev_kv))
                        for e in resp.events
                    ]
                    next_rev = events[-1].kv.mod_revision + 1
                    yield WatchBatch(resp.header.revision, events)
            except asyncio.CancelledError:
                if _caller_cancelled():
                    raise
                failures += 1  # the stream was cancelled under us (channel replaced): resume
                await self._rotate(ep)
            except (grpc.aio.AioRpcError, UnavailableError) as err:
                failures += 1
                log.debug("watch.resume", endpoint=ep.address, error=str(err), from_rev=next_rev)
                await self._rotate(ep)
                await asyncio.sleep(min(0.05 * failures, 1.0))
            finally:
                call.cancel()

    # ---------------------------------------------------------------- Cluster
    async def status(self, endpoint: str | None = None) -> Status:
        async def ask(ep: _Endpoint, t: float) -> Status:
            r = await ep.maint.Status(rpc_pb2.StatusRequest(), timeout=t)
            return Status(_header(r.header), r.version, r.dbSize, r.leader, r.raftIndex,
                          r.raftTerm, r.raftAppliedIndex)
        if endpoint is None:
            return await self._call(ask, idempotent=True)
        one = _Endpoint(endpoint.removeprefix("http://"))
        try:
            return await ask(one, self.timeout)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None
        finally:
            await one.channel.close(None)

    async def members(self) -> list[Member]:
        async def run(ep: _Endpoint, t: float) -> list[Member]:
            r = await ep.cluster.MemberList(rpc_pb2.MemberListRequest(), timeout=t)
            return [Member(m.ID, m.name, list(m.peerURLs), list(m.clientURLs), m.isLearner)
                    for m in r.members]
        return await self._call(run, idempotent=True)


class KeepAlive:
    """Background renewal of one lease over one long-lived LeaseKeepAlive stream.

    ``deadline`` is the monotonic instant after which the server may have expired the lease:
    the send time of the last successful renewal (or of the grant) plus the TTL — the
    server starts its TTL only when the request arrives, so this is never later than the
    server's. ``lost`` is set once the lease is known to be gone (the server answered TTL 0)
    or when the deadline is within ``margin`` seconds with no renewal: whoever acts under
    the lease must stop *before* the server can hand what it protects to someone else.
    """

    def __init__(self, client: Client, lease_id: int, ttl: int,
                 granted_at: float | None = None) -> None:
        self.client = client
        self.lease_id = lease_id
        self.ttl = ttl
        self.margin = min(ttl * 0.1, 1.0)
        self.lost = asyncio.Event()
        self.deadline = (time.monotonic() if granted_at is None else granted_at) + ttl
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"keepalive-{lease_id:x}")

    @property
    def give_up_at(self) -> float:
        return self.deadline - self.margin

    async def stop(self) -> None:
        # The flag ends the renewal loop at its next turn even if the cancellation were
        # lost on the way (see coord.aiotools); the cancel ends it at once.
        self._stopping = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def _expired(self) -> bool:
        if time.monotonic() >= self.give_up_at:
            log.warning("lease.lost", lease=f"{self.lease_id:x}", reason="not renewed in time")
            self.lost.set()
            return True
        return False

    async def _run(self) -> None:
        interval = max(self.ttl / 3.0, 0.2)
        watchdog = asyncio.get_running_loop().create_task(self._watchdog())
        try:
            while not (self.lost.is_set() or self._stopping):
                ep = self.client._current()
                call = ep.lease.LeaseKeepAlive()
                try:
                    while not (self.lost.is_set() or self._stopping):
                        sent_at = time.monotonic()
                        await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=self.lease_id))
                        resp = await within(
                            call.read(), timeout=max(self.give_up_at - sent_at, 0.05))
                        if resp is _EOF:
                            raise UnavailableError(grpc.StatusCode.UNAVAILABLE,
                                                   "keepalive stream ended")
                        if resp.TTL <= 0:
                            log.warning("lease.lost", lease=f"{self.lease_id:x}",
                                        reason="not found")
                            self.lost.set()
                            return
                        self.deadline = sent_at + resp.TTL
                        await asyncio.sleep(interval)
                except asyncio.CancelledError:
                    if _caller_cancelled():
                        raise
                    await asyncio.sleep(0.05)  # stream cancelled under us: open a new one
                except (grpc.aio.AioRpcError, ClientError, TimeoutError,
                        asyncio.InvalidStateError) as err:
                    # InvalidStateError: the stream died under us (RPC already finished).
                    log.warning("lease.keepalive_failed", lease=f"{self.lease_id:x}",
                                error=str(err) or type(err).__name__)
                    await self.client._rotate(ep)
                    await asyncio.sleep(0.1)
                finally:
                    call.cancel()
        except Exception:
            # Fail safe: a renewal loop that broke unexpectedly must not leave the holder
            # believing its lease is alive.
            log.exception("lease.keepalive_crashed", lease=f"{self.lease_id:x}")
            self.lost.set()
            raise
        finally:
            watchdog.cancel()

    async def _watchdog(self) -> None:
        """Declares the lease lost on time even while a renewal call hangs."""
        while not self._expired():
            await asyncio.sleep(max(min(self.give_up_at - time.monotonic(), 0.25), 0.01))
