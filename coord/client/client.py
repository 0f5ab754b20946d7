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
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import structlog

from coord.client.auth import ClientAuth, TokenSource, stale_token
from coord.client.channels import (
    CLOSE_GRACE,
    EOF,
    CancelledRpc,
    ChannelFactory,
    ClientTLS,
    Endpoint,
    caller_cancelled,
    not_sent,
    split_scheme,
    transport_failure,
)
from coord.client.errors import (
    ClientError,
    CompactedError,
    LeaseNotFoundError,
    ServerError,
    UnavailableError,
    WatchCanceledError,
    from_rpc_error,
)
from coord.client.keepalive import KeepAlive
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
from coord.pb import kv_pb2, rpc_pb2

log = structlog.get_logger("coord.client")

T = TypeVar("T")


def _header(h: rpc_pb2.ResponseHeader) -> Header:
    return Header(h.cluster_id, h.member_id, h.revision, h.raft_term)


def _kv_or_none(has: bool, kv: kv_pb2.KeyValue) -> KeyValue | None:
    return KeyValue.from_pb(kv) if has else None


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
                 channels: ChannelFactory | None = None, tls: ClientTLS | None = None,
                 auth: ClientAuth | None = None) -> None:
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e]
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        split = [split_scheme(e) for e in endpoints]
        self.endpoints = [address for address, _ in split]
        if tls is None and any(secure for _, secure in split):
            tls = ClientTLS()  # https:// without --cacert: the system's CAs, as etcdctl
        self.tls = tls
        """None: plaintext; else every endpoint over TLS (:class:`ClientTLS`)."""
        self.timeout = timeout
        self._index = 0
        self._ep: Endpoint | None = None
        self._closed = False
        self._closing: set[Any] = set()
        self._channels = channels
        self.auth = auth
        """None: no credentials (a store without auth, or a client certificate's CN)."""
        self._tokens = TokenSource(auth) if auth is not None else None

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

    def _current(self) -> Endpoint:
        if self._closed:
            raise ClientError("client is closed")
        if self._ep is None:
            address = self.endpoints[self._index]
            self._ep = Endpoint(address, self._channels, self.tls, self._tokens)
        return self._ep

    async def _rotate(self, failed: Endpoint) -> None:
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

    async def _call(self, fn: Callable[[Endpoint, float], Awaitable[T]], *,
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
                if caller_cancelled():
                    raise
                # The RPC itself was cancelled (its channel closed): outcome unknown.
                err = CancelledRpc()
            except grpc.aio.AioRpcError as rpc_err:
                err = rpc_err
            if err.code() not in (grpc.StatusCode.UNAVAILABLE,
                                  grpc.StatusCode.DEADLINE_EXCEEDED,
                                  grpc.StatusCode.CANCELLED):
                raise from_rpc_error(err) from None
            if transport_failure(err):
                await self._rotate(ep)
            if not (idempotent or not_sent(err)) or time.monotonic() >= deadline:
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
        async def run(ep: Endpoint, t: float) -> RangeResult:
            return _convert_range(await ep.kv.Range(req, timeout=t))
        return await self._call(run, idempotent=True)

    async def get_one(self, key: Key) -> KeyValue | None:
        r = await self.get(key)
        return r.kvs[0] if r.kvs else None

    async def put(self, key: Key, value: Key, *, lease: int = 0,
                  prev_kv: bool = False) -> PutResult:
        req = rpc_pb2.PutRequest(key=to_bytes(key), value=to_bytes(value), lease=lease,
                                 prev_kv=prev_kv)

        async def run(ep: Endpoint, t: float) -> PutResult:
            r = await ep.kv.Put(req, timeout=t)
            return PutResult(_header(r.header), _kv_or_none(r.HasField("prev_kv"), r.prev_kv))
        return await self._call(run, idempotent=False)

    async def delete(self, key: Key, *, prefix: bool = False, range_end: Key | None = None,
                     prev_kv: bool = False) -> DeleteResult:
        k = to_bytes(key)
        end = prefix_end(k) if prefix else (to_bytes(range_end) if range_end else b"")
        req = rpc_pb2.DeleteRangeRequest(key=k, range_end=end, prev_kv=prev_kv)

        async def run(ep: Endpoint, t: float) -> DeleteResult:
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

        async def run(ep: Endpoint, t: float) -> TxnResult:
            r = await ep.kv.Txn(req, timeout=t)
            return TxnResult(_header(r.header), r.succeeded, [_convert_op(x) for x in r.responses])
        return await self._call(run, idempotent=read_only)

    async def compact(self, revision: int, physical: bool = False) -> int:
        req = rpc_pb2.CompactionRequest(revision=revision, physical=physical)

        async def run(ep: Endpoint, t: float) -> int:
            return int((await ep.kv.Compact(req, timeout=t)).header.revision)
        return await self._call(run, idempotent=False)

    # ---------------------------------------------------------------- Lease
    async def grant(self, ttl: int, lease_id: int = 0) -> LeaseGrant:
        req = rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lease_id)

        async def run(ep: Endpoint, t: float) -> LeaseGrant:
            r = await ep.lease.LeaseGrant(req, timeout=t)
            if r.error:
                raise ServerError(grpc.StatusCode.UNKNOWN, r.error)
            return LeaseGrant(r.ID, r.TTL, r.header.revision)
        return await self._call(run, idempotent=False)

    async def revoke(self, lease_id: int) -> int:
        req = rpc_pb2.LeaseRevokeRequest(ID=lease_id)

        async def run(ep: Endpoint, t: float) -> int:
            return int((await ep.lease.LeaseRevoke(req, timeout=t)).header.revision)
        return await self._call(run, idempotent=False)

    async def time_to_live(self, lease_id: int, keys: bool = False) -> LeaseTTL:
        req = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=keys)

        async def run(ep: Endpoint, t: float) -> LeaseTTL:
            r = await ep.lease.LeaseTimeToLive(req, timeout=t)
            return LeaseTTL(r.ID, r.TTL, r.grantedTTL, list(r.keys))
        return await self._call(run, idempotent=True)

    async def leases(self) -> list[int]:
        async def run(ep: Endpoint, t: float) -> list[int]:
            r = await ep.lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=t)
            return [x.ID for x in r.leases]
        return await self._call(run, idempotent=True)

    async def keepalive_once(self, lease_id: int) -> int:
        """Renew once; returns the TTL, raises :class:`LeaseNotFoundError` if it is gone."""
        async def run(ep: Endpoint, t: float) -> int:
            call = ep.lease.LeaseKeepAlive(timeout=t)
            try:
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
                resp = await call.read()
            finally:
                call.cancel()
            if resp is EOF:
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
        relogged = False  # a canceled create is retried once with a fresh token
        while True:
            ep = self._current()
            try:
                await ep.login(self.timeout)
            except grpc.aio.AioRpcError as err:
                if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    failures += 1
                    await self._rotate(ep)
                    await asyncio.sleep(min(0.05 * failures, 1.0))
                    continue
                raise from_rpc_error(err) from None
            sent_token = self._tokens.token if self._tokens is not None else None
            create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                key=k, range_end=end, start_revision=next_rev, prev_kv=prev_kv,
                filters=filters, progress_notify=progress_notify))
            call = ep.watch.Watch(metadata=(("hasleader", "true"),))
            try:
                await call.write(create)
                while True:
                    resp = await call.read()
                    if resp is EOF:
                        raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "watch stream ended")
                    assert isinstance(resp, rpc_pb2.WatchResponse)
                    failures = 0
                    if resp.compact_revision:
                        raise CompactedError(
                            grpc.StatusCode.OUT_OF_RANGE,
                            "etcdserver: mvcc: required revision has been compacted",
                            resp.compact_revision)
                    if resp.canceled and sent_token is not None and not relogged:
                        # An expired token also reads "permission denied" here: log in
                        # again once before believing it.
                        relogged = True
                        assert self._tokens is not None
                        self._tokens.invalidate(sent_token)
                        break
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
                if caller_cancelled():
                    raise
                failures += 1  # the stream was cancelled under us (channel replaced): resume
                await self._rotate(ep)
            except (grpc.aio.AioRpcError, UnavailableError) as err:
                if self._tokens is not None and stale_token(err):
                    self._tokens.invalidate(sent_token)
                failures += 1
                log.debug("watch.resume", endpoint=ep.address, error=str(err), from_rev=next_rev)
                await self._rotate(ep)
                await asyncio.sleep(min(0.05 * failures, 1.0))
            finally:
                call.cancel()

    # ---------------------------------------------------------------- Cluster
    async def status(self, endpoint: str | None = None) -> Status:
        async def ask(ep: Endpoint, t: float) -> Status:
            r = await ep.maint.Status(rpc_pb2.StatusRequest(), timeout=t)
            return Status(_header(r.header), r.version, r.dbSize, r.leader, r.raftIndex,
                          r.raftTerm, r.raftAppliedIndex)
        if endpoint is None:
            return await self._call(ask, idempotent=True)
        one = Endpoint(split_scheme(endpoint)[0], tls=self.tls, tokens=self._tokens)
        try:
            return await ask(one, self.timeout)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None
        finally:
            await one.channel.close(None)

    async def members(self) -> list[Member]:
        async def run(ep: Endpoint, t: float) -> list[Member]:
            r = await ep.cluster.MemberList(rpc_pb2.MemberListRequest(), timeout=t)
            return [Member(m.ID, m.name, list(m.peerURLs), list(m.clientURLs), m.isLearner)
                    for m in r.members]
        return await self._call(run, idempotent=True)
