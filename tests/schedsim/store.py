"""The simulated store: coord's own applier (KV store, lessor, watch hub) behind a fake
gRPC channel, so each worker's production :class:`coord.client.Client` — failover,
keepalive, watch resume and all — talks to it through ``WorkerConfig.channels``.

Why this route: the applier is coord's deterministic state machine (the same code every
member runs after Raft commits), so txn compares, lease expiry and watch semantics are the
production ones; only replication is left out (the Raft simulator in ``tests/sim`` covers
it). The channel adds what a network adds: latency, an unavailable store, a worker cut off
from it, and a crashed worker whose calls never return.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from coord.api.watch import open_stream
from coord.errors import CoordError
from coord.mvcc.store import Changes
from coord.pb import internal_pb2, rpc_pb2
from coord.server.apply import Applier
from coord.server.validate import check_txn
from tests.schedsim.vtime import VirtualClock

EOF_ = grpc.aio.EOF  # type: ignore[attr-defined]


@dataclass
class Commit:
    """One key change the store committed (the history the checkers read)."""

    at: float
    rev: int
    key: str
    value: bytes | None
    """None: deleted."""
    create_rev: int


def _unavailable(details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                grpc.aio.Metadata(), details=details,
                                debug_error_string="")


def _rpc_error(err: CoordError) -> grpc.aio.AioRpcError:
    from coord.api.errors import status_code
    code = grpc.StatusCode[status_code(err).name]
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                details=err.message, debug_error_string="")


class _Tee:
    """The store's commit observer: the watch hub, and the recorded history."""

    def __init__(self, hub: Any, record: Callable[[int, Changes], None]) -> None:
        self.hub = hub
        self.record = record

    @property
    def active(self) -> bool:
        return True

    def on_commit(self, rev: int, changes: Changes) -> None:
        self.record(rev, changes)
        if self.hub.active:
            self.hub.on_commit(rev, changes)

    def on_restore(self, old_rev: int) -> None:
        self.hub.on_restore(old_rev)


@dataclass
class Slow:
    """A slow path between one worker and the store over [start, end): each call sent in
    it (a ``Txn`` only, or any call and keepalive: ``scope``) reaches the store ``delay_in``
    seconds late and its answer comes back ``delay_out`` seconds late. The request is on
    the wire: it lands even if the caller gave up (a timeout) or died meanwhile."""

    start: float
    end: float
    delay_in: float
    delay_out: float
    scope: str
    """``txn`` or ``all``."""


class SimStore:
    def __init__(self, clock: VirtualClock, rng: random.Random) -> None:
        self.clock = clock
        self.rng = rng
        self.applier = Applier()
        self.applier.lessor.promote(0.0)
        self.hub = self.applier.watch_hub
        self.applier.store.set_observer(None)
        self.applier.store.set_observer(_Tee(self.hub, self._record))
        self.commits: list[Commit] = []
        self.down_until = 0.0
        """The store answers nothing before this instant (an outage)."""
        self.cut: dict[str, float] = {}
        """Incarnation → instant until which it cannot reach the store (a partition)."""
        self.dead: set[str] = set()
        """Crashed incarnations: their calls never return."""
        self.max_latency = 0.02
        self.slow: dict[str, list[Slow]] = {}
        """Incarnation → its slow windows (calls delayed on the way in and/or out)."""
        self._ids = itertools.count(1)
        self._wakes: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ history
    def _record(self, rev: int, changes: Changes) -> None:
        for i in range(0, len(changes), 2):
            key, rec = changes[i], changes[i + 1]
            assert isinstance(key, bytes) and not isinstance(rec, bytes)
            self.commits.append(Commit(self.clock.now, rev, key.decode(), rec.value,
                                       rec.create_rev))

    def notify(self) -> None:
        for wake in list(self._wakes):
            wake()

    # ------------------------------------------------------------------ server side
    def tick(self) -> None:
        """Expire the leases whose TTL ran out (the leader's job in coord)."""
        due = self.applier.lessor.expired(self.clock.now)
        if due:
            req = internal_pb2.InternalRequest(id=next(self._ids),
                                               lease_expire=internal_pb2.LeaseExpire(ids=due))
            self.applier.apply(req, self.clock.now)
            self.notify()

    def compact_now(self) -> None:
        """Compact to the current revision (watchers behind it are cancelled)."""
        rev = self.applier.current_revision
        if rev > max(self.applier.compact_revision, 0):
            self.applier.apply(internal_pb2.InternalRequest(
                id=next(self._ids), compaction=rpc_pb2.CompactionRequest(revision=rev)),
                self.clock.now)
            self.notify()

    def slowness(self, who: str, method: str) -> Slow | None:
        now = self.clock.now
        for w in self.slow.get(who, ()):
            if w.start <= now < w.end and (w.scope == "all" or method.endswith("/Txn")):
                return w
        return None

    def reachable(self, who: str) -> bool:
        return self.clock.now >= self.down_until and self.clock.now >= self.cut.get(who, 0.0)

    def handle(self, method: str, req: Any) -> Any:
        a, now = self.applier, self.clock.now
        name = method.rsplit("/", 1)[1]
        try:
            if name == "Range":
                return a.range(req)
            if name == "Put":
                out = a.apply(internal_pb2.InternalRequest(id=next(self._ids), put=req), now)
            elif name == "DeleteRange":
                out = a.apply(internal_pb2.InternalRequest(id=next(self._ids),
                                                           delete_range=req), now)
            elif name == "Txn":
                check_txn(req)
                out = a.apply(internal_pb2.InternalRequest(id=next(self._ids), txn=req), now)
            elif name == "Compact":
                out = a.apply(internal_pb2.InternalRequest(id=next(self._ids),
                                                           compaction=req), now)
            elif name == "LeaseGrant":
                out = a.apply(internal_pb2.InternalRequest(id=next(self._ids),
                                                           lease_grant=req), now)
            elif name == "LeaseRevoke":
                out = a.apply(internal_pb2.InternalRequest(id=next(self._ids),
                                                           lease_revoke=req), now)
            elif name == "LeaseTimeToLive":
                return a.lease_time_to_live(req, now)
            elif name == "LeaseLeases":
                return a.lease_leases()
            else:
                raise NotImplementedError(method)
        except CoordError as err:
            raise _rpc_error(err) from None
        self.notify()
        return out

    # ------------------------------------------------------------------ client side
    def channels(self, who: str) -> Callable[[str], Any]:
        """The ``ChannelFactory`` of one worker incarnation."""
        return lambda _address: _Channel(self, who)


class _Channel:
    def __init__(self, store: SimStore, who: str) -> None:
        self.store = store
        self.who = who

    async def hop(self) -> None:
        """One network crossing: a random delay; a crashed incarnation's call never ends,
        an unreachable store fails it."""
        s = self.store
        await asyncio.sleep(s.rng.uniform(0.0005, s.max_latency))
        if self.who in s.dead:
            await asyncio.get_running_loop().create_future()
        if not s.reachable(self.who):
            raise _unavailable("failed to connect to all addresses")

    async def slow_call(self, method: str, req: Any, slow: Slow) -> Any:
        """A call on a slow path: delivered by a task of nobody's (a crash or a timeout of
        the caller does not recall a request on the wire), answered late."""
        s = self.store
        if self.who in s.dead:
            await asyncio.get_running_loop().create_future()
        answer: asyncio.Future[tuple[Any, BaseException | None]] = (
            asyncio.get_running_loop().create_future())

        async def deliver() -> None:
            await asyncio.sleep(s.rng.uniform(0.0005, s.max_latency) + slow.delay_in)
            out: Any = None
            err: BaseException | None = None
            if not s.reachable(self.who):
                err = _unavailable("failed to connect to all addresses")
            else:
                try:
                    out = s.handle(method, req)
                except grpc.aio.AioRpcError as e:
                    err = e
                await asyncio.sleep(s.rng.uniform(0.0005, s.max_latency) + slow.delay_out)
                if not s.reachable(self.who):
                    err = _unavailable("connection lost before the answer")
            if not answer.done():
                answer.set_result((out, err))

        asyncio.get_running_loop().create_task(deliver(), context=contextvars.Context())
        out, err = await asyncio.shield(answer)
        if self.who in s.dead:
            await asyncio.get_running_loop().create_future()
        if err is not None:
            raise err
        return out

    def unary_unary(self, method: str, *_a: Any, **_k: Any) -> Callable[..., Any]:
        async def call(req: Any, timeout: float | None = None, **_kw: Any) -> Any:
            async def go() -> Any:
                slow = self.store.slowness(self.who, method)
                if slow is not None:
                    return await self.slow_call(method, req, slow)
                await self.hop()
                out = self.store.handle(method, req)
                await self.hop()  # an answer lost here: applied, outcome unknown to the caller
                return out
            if timeout is None:
                return await go()
            try:
                return await asyncio.wait_for(go(), timeout)
            except TimeoutError:
                raise grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                           grpc.aio.Metadata(), grpc.aio.Metadata(),
                                           details="Deadline Exceeded",
                                           debug_error_string="") from None
        return call

    def stream_stream(self, method: str, *_a: Any, **_k: Any) -> Callable[..., Any]:
        def open_call(*_a2: Any, **_kw: Any) -> Any:
            if method.endswith("/Watch"):
                return _WatchCall(self)
            return _KeepAliveCall(self)
        return open_call

    def unary_stream(self, method: str, *_a: Any, **_k: Any) -> Callable[..., Any]:
        return _unsupported(method)

    def stream_unary(self, method: str, *_a: Any, **_k: Any) -> Callable[..., Any]:
        return _unsupported(method)

    async def close(self, grace: float | None = None) -> None:
        return None


def _unsupported(method: str) -> Callable[..., Any]:
    def call(*_a: Any, **_k: Any) -> Any:
        raise NotImplementedError(f"the simulated store does not serve {method}")
    return call


class _KeepAliveCall:
    def __init__(self, ch: _Channel) -> None:
        self.ch = ch
        self.answers: list[Any] = []

    async def write(self, req: rpc_pb2.LeaseKeepAliveRequest) -> None:
        s = self.ch.store
        slow = s.slowness(self.ch.who, "/etcdserverpb.Lease/LeaseKeepAlive")
        if slow is not None:  # a keepalive late on the wire renews the lease late
            await asyncio.sleep(slow.delay_in + slow.delay_out)
        await self.ch.hop()
        self.answers.append(s.applier.lease_keepalive(req, s.clock.now))

    async def read(self) -> Any:
        await self.ch.hop()
        return self.answers.pop(0)

    def cancel(self) -> bool:
        return True


class _WatchCall:
    def __init__(self, ch: _Channel) -> None:
        self.ch = ch
        self.event = asyncio.Event()
        self.stream = open_stream(ch.store.hub, self.event.set)
        self.out: list[rpc_pb2.WatchResponse] = []
        ch.store._wakes.append(self.event.set)
        self.closed = False

    async def write(self, req: rpc_pb2.WatchRequest) -> None:
        await self.ch.hop()
        self.stream.handle(req)
        self.event.set()

    async def read(self) -> Any:
        while not self.out:
            if not self.ch.store.reachable(self.ch.who):
                raise _unavailable("watch stream broken")
            self.out.extend(self.stream.pending())
            if self.out:
                break
            self.event.clear()
            await self.event.wait()
        await self.ch.hop()
        return self.out.pop(0)

    def cancel(self) -> bool:
        if not self.closed:
            self.closed = True
            self.stream.close()
            s = self.ch.store
            if self.event.set in s._wakes:
                s._wakes.remove(self.event.set)
        return True
