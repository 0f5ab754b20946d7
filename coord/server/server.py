"""CoordServer: wires storage, node, applier, lessor, watch hub and the gRPC services."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import structlog

from coord.api.auth import AuthService
from coord.api.errors import RECV_LIMIT
from coord.api.kv import KVService
from coord.api.lease import LeaseService
from coord.api.maintenance import ClusterService, MaintenanceService
from coord.api.proto import rpc_pb2
from coord.api.watch import WatchService
from coord.errors import NoLeader
from coord.rpc.h2.server import H2Server
from coord.rpc.handlers import Context, MethodHandler, service_handlers
from coord.rpc.status import StatusCode
from coord.server.apply import Applier
from coord.server.config import GRPC_RECV_LIMIT, ServerConfig
from coord.server.core import Core
from coord.server.raft_node import RaftNode
from coord.server.transport import (
    PEER_GRPC_OPTIONS,
    PEER_RECV_LIMIT,
    PeerService,
    grpc_server_kind,
    peer_handlers,
)

if TYPE_CHECKING:
    import grpc

    from coord.rpc.local import LocalTarget

log = structlog.get_logger("coord.server")

WAIT_LOG_EVERY = 5.0
"""Seconds between two ``member.waiting_for_peers`` lines while a member knows no leader."""

GRPC_OPTIONS: list[tuple[str, Any]] = [  # the grpcio fallback's
    # The transport accepts more than etcd does so that coord.api.errors can refuse an
    # oversized request with grpc-go's exact wording (etcd's clients see that text).
    ("grpc.max_receive_message_length", 4 * GRPC_RECV_LIMIT),
    ("grpc.max_send_message_length", 2**31 - 1),
    # Real clients ping idle streams every 10 s (grpc-go clamps etcdctl's keepalive);
    # without these, grpcio answers with GOAWAY too_many_pings after about a minute.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.so_reuseport", 0),
]


def client_handlers(core: Core, watch: WatchService) -> dict[str, MethodHandler]:
    """The client port's method table: every method of etcd's six services
    (``/etcdserverpb.KV/Range`` ... → handler), built from ``rpc.proto``'s descriptors."""
    services: dict[str, object] = {
        "KV": KVService(core), "Lease": LeaseService(core), "Watch": watch,
        "Maintenance": MaintenanceService(core), "Cluster": ClusterService(core),
        "Auth": AuthService(core)}
    table: dict[str, MethodHandler] = {}
    for name, servicer in services.items():
        table.update(service_handlers(rpc_pb2.DESCRIPTOR.services_by_name[name], servicer))
    return table


class ClientHandlers:
    """Every client-port method behind one resolver, :meth:`service` (a dict lookup per
    call), for the h2 server, in-process calls and the grpcio fallback.

    On grpc.aio, registering them as grpcio "registered methods" (what the generated code
    does) makes its accept loop keep one pending future per method and ``asyncio.wait`` on
    all of them for every incoming call; an interceptor adds two coroutines per call. Both
    cost more CPU per request than one generic handler doing this lookup.

    It also implements etcd's ``hasleader`` metadata: a request carrying
    ``hasleader=true`` fails at once with ``Unavailable: etcdserver: no leader`` when this
    member knows no leader (clients use it on watches so that they move to a member that
    is part of a quorum). The metadata is only looked at while there is no leader.
    """

    def __init__(self, node: Any, handlers: dict[str, MethodHandler]) -> None:
        self.node = node
        self.handlers = handlers
        self.refusals = {method: _refusal(h) for method, h in handlers.items()}

    def service(self, handler_call_details: Any) -> MethodHandler | None:
        handler = self.handlers.get(handler_call_details.method)
        if handler is None or self.node.leader_id != 0:
            return handler
        md = handler_call_details.invocation_metadata or ()
        if any(k == "hasleader" and v == "true" for k, v in md):
            return self.refusals[handler_call_details.method]
        return handler


def _refusal(handler: MethodHandler) -> MethodHandler:
    async def refuse(request: Any, context: Context) -> Any:
        await context.abort(StatusCode.UNAVAILABLE, NoLeader.message)

    async def refuse_stream(request: Any, context: Context) -> AsyncIterator[Any]:
        await context.abort(StatusCode.UNAVAILABLE, NoLeader.message)
        yield  # pragma: no cover - makes this an async generator

    return handler.with_behaviour(refuse_stream if handler.response_streaming else refuse)


def use_uvloop() -> bool:
    """Make the next event loop created by ``asyncio.run`` (or ``new_event_loop``) a uvloop
    loop, unless ``RAFTCRON_UVLOOP=0``. Returns whether it did.

    A member's request path is asyncio futures, tasks, callbacks and socket I/O (its HTTP/2
    server, the Raft loop); uvloop runs them for less CPU (about a fifth less per request
    when members served through grpc.aio, docs/benchmarks.md). Nothing in coord depends on
    which loop runs it.
    """
    if os.environ.get("RAFTCRON_UVLOOP", "1") == "0":
        return False
    try:
        import uvloop  # noqa: PLC0415 - optional at import time, a dependency in practice
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def gc_freeze_enabled() -> bool:
    """Whether long-lived processes (members, CLI workers) freeze their startup heap:
    unless ``RAFTCRON_GC_FREEZE=0``."""
    return os.environ.get("RAFTCRON_GC_FREEZE", "1") != "0"


def freeze_startup_heap() -> bool:
    """Collect once, then move every object alive now out of the collector's reach
    (``gc.freeze``), unless ``RAFTCRON_GC_FREEZE=0``. Returns whether it did.

    What a member holds after recovery and start — the imported modules (protobuf,
    structlog, ...), the recovered store, the Raft log — lives as long as the process, yet
    every full (generation 2) collection walked all of it again: a stop-the-world pause of
    40-60 ms every few thousand writes at 64 clients, which every request in flight waits
    out (docs/benchmarks.md). Frozen objects are still freed by reference counting; only
    garbage cycles among them would be kept, and the collection before the freeze leaves
    none.
    """
    if not gc_freeze_enabled():
        return False
    gc.collect()
    gc.freeze()
    return True


class CoordServer:
    """One coord member serving the etcd v3 API on ``config.listen_client``.

    Built outside a running event loop (the CLI builds it before ``asyncio.run``), it
    selects uvloop for the loop that will run it (:func:`use_uvloop`) and, once recovered
    and ready to serve, freezes the heap it holds then (:func:`freeze_startup_heap`); built
    inside one (tests, where the process is shared), it leaves both alone."""

    def __init__(self, config: ServerConfig) -> None:
        self._standalone = False
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._standalone = True
            use_uvloop()
        self.config = config
        self.applier = Applier()
        # Every member runs Raft, a one-member cluster too (as etcd does).
        self.node = RaftNode(config, self.applier, on_applied=self._on_applied,
                             join=config.initial_cluster_state == "existing")
        self.core = Core(self.node, self.applier, config)
        self._grpc: grpc.aio.Server | None = None
        self._h2: H2Server | None = None
        self._client: ClientHandlers | None = None
        self._local: LocalTarget | None = None
        self._stopped = False
        self._peer_h2: H2Server | None = None
        self._peer_grpc: grpc.aio.Server | None = None
        self.watch = WatchService(self.core)
        self._waiting: asyncio.Task[None] | None = None

    def _on_applied(self) -> None:
        self.watch.notify()

    async def start(self) -> None:
        """Recover from disk, then start serving. Raises StorageError on a damaged WAL."""
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        if self.node.join and not (self.config.data_dir / "wal").exists():
            await self.node.discover_cluster()
        kind = grpc_server_kind()
        self.node.recover()
        peer_service = PeerService(self.node.transport, self.node.serve_lease_renew,
                                   self.node.lookup_peer, self.node.serve_lease_ttl)
        peer_table = peer_handlers(peer_service)
        if kind == "h2":
            peer_h2 = H2Server(lambda call: peer_table.get(call.method),
                               max_receive=PEER_RECV_LIMIT)
            await peer_h2.start(self.config.listen_peer)
            self._peer_h2 = peer_h2
        else:
            from coord.api import grpcio  # noqa: PLC0415 - imports grpc: the fallback only

            self._peer_grpc = await grpcio.serve(
                self.config.listen_peer, lambda call: peer_table.get(call.method),
                PEER_GRPC_OPTIONS)
        self.node.start()
        self._client = client = ClientHandlers(self.node, client_handlers(self.core, self.watch))
        if self._standalone:
            freeze_startup_heap()  # before the first client request, not during one
        if kind == "h2":
            h2 = H2Server(client.service, max_receive=RECV_LIMIT)
            await h2.start(self.config.listen_client)
            self._h2 = h2
        else:
            from coord.api import grpcio  # noqa: PLC0415 - imports grpc: the fallback only

            self._grpc = await grpcio.serve(self.config.listen_client, client.service,
                                            GRPC_OPTIONS)
        self.core.start()
        self._waiting = asyncio.get_running_loop().create_task(self._report_waiting())
        log.info("coord.serving", name=self.config.name, client=self.config.listen_client,
                 grpc_server=kind,
                 member_id=f"{self.node.member_id:x}", data_dir=str(self.config.data_dir),
                 revision=self.applier.current_revision)

    def local_target(self) -> LocalTarget:
        """This member's client services for a client in the same process (started only).
        Made on first use: ``coord.rpc.local`` speaks grpc.aio's types to its client, so a
        member nobody calls in-process never imports grpc."""
        if self._client is None:
            raise RuntimeError("the server is not started")
        if self._local is None:
            from coord.rpc.local import LocalTarget  # noqa: PLC0415 - imports grpc

            self._local = LocalTarget(self._client.service, max_receive=RECV_LIMIT)
            if self._stopped:
                self._local.close()
        return self._local

    def channels(self) -> Callable[[str], Any]:
        """A channel factory (``coord.client.ChannelFactory``) for a client in this process:
        this member's own client address is reached in-process (:meth:`local_target`), any
        other endpoint is left to the client (None: over the network)."""
        own = self.config.listen_client.removeprefix("http://")

        def channel(address: str) -> Any:
            return self.local_target().channel() if address == own else None

        return channel

    async def _report_waiting(self) -> None:
        """While this member knows no leader (its peers are not up yet, or a quorum is
        gone), say every few seconds which members it has not heard from: hosts boot in any
        order, and a member waits for its peers as long as it takes."""
        node = self.node
        since = time.monotonic()
        while True:
            await asyncio.sleep(WAIT_LOG_EVERY)
            now = time.monotonic()
            if node.leader_id:
                since = now
                continue
            silent = sorted(
                f"{info.name or format(mid, 'x')}@{info.peer}"
                for mid, info in node.membership.members.items()
                if mid != node.member_id
                and now - node.transport.last_heard.get(mid, -WAIT_LOG_EVERY) >= WAIT_LOG_EVERY)
            log.warning("member.waiting_for_peers", member=self.config.name,
                        waited_s=round(now - since), not_heard_from=silent)

    async def stop(self, grace: float = 1.0) -> None:
        self._stopped = True
        if self._waiting is not None:
            self._waiting.cancel()
        if self._local is not None:
            self._local.close()  # in-process streams end as network ones do
        await self.core.stop()
        await self.watch.close()
        if self._grpc is not None:
            await self._grpc.stop(grace)
        if self._h2 is not None:
            await self._h2.stop(grace)
        await self.node.stop()
        if self._peer_grpc is not None:
            await self._peer_grpc.stop(0)
        if self._peer_h2 is not None:
            await self._peer_h2.stop(0)
        log.info("coord.stopped", name=self.config.name)

    async def serve_until(self, stop: asyncio.Event) -> None:
        """Start, serve until ``stop`` is set, stop — also when ``stop`` is set while still
        starting (a joining member looking for its cluster)."""
        await self.start_until(stop)
        try:
            await stop.wait()
        finally:
            await self.stop()

    async def start_until(self, stop: asyncio.Event) -> None:
        """:meth:`start`, given up (and the member stopped) if ``stop`` is set first; the
        caller sees ``stop`` set and goes on to stop."""
        starting = asyncio.ensure_future(self.start())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
        if not starting.cancelled():
            starting.result()  # a failed start raises here (StorageError, OSError)
