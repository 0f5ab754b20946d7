"""CoordServer: wires storage, node, applier, lessor, watch hub and the gRPC services."""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Any

import grpc
import structlog

from coord.api.auth import AuthService
from coord.api.errors import RECV_LIMIT
from coord.api.h2.server import H2Server
from coord.api.kv import KVService
from coord.api.lease import LeaseService
from coord.api.local import LocalTarget
from coord.api.maintenance import ClusterService, MaintenanceService
from coord.api.proto import raft_pb2_grpc, rpc_pb2_grpc
from coord.api.watch import WatchService
from coord.errors import NoLeader
from coord.server.apply import Applier
from coord.server.config import GRPC_RECV_LIMIT, ServerConfig
from coord.server.core import Core
from coord.server.raft_node import RaftNode
from coord.server.transport import (
    PEER_GRPC_OPTIONS,
    PEER_RECV_LIMIT,
    PeerService,
    grpc_server_kind,
)

log = structlog.get_logger("coord.server")

GRPC_OPTIONS: list[tuple[str, Any]] = [
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


class _Collect:
    """Stands in for the server in the generated ``add_*Servicer_to_server`` functions and
    keeps their method handlers (``/package.Service/Method`` -> handler)."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same handlers arrive through add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        for method, handler in handlers.items():
            self.handlers[f"/{service}/{method}"] = handler


class ClientHandlers(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Every client-port method behind one generic handler (a dict lookup per call).

    Registering them as grpcio "registered methods" (what the generated code does) makes
    grpc.aio's accept loop keep one pending future per method and ``asyncio.wait`` on all
    of them for every incoming call; an interceptor adds two coroutines per call. Both cost
    more CPU per request than the lookup here.

    It also implements etcd's ``hasleader`` metadata: a request carrying
    ``hasleader=true`` fails at once with ``Unavailable: etcdserver: no leader`` when this
    member knows no leader (clients use it on watches so that they move to a member that
    is part of a quorum). The metadata is only looked at while there is no leader.
    """

    def __init__(self, node: Any, handlers: dict[str, Any]) -> None:
        self.node = node
        self.handlers = handlers

    def service(self, handler_call_details: Any) -> Any:
        handler = self.handlers.get(handler_call_details.method)
        if handler is None or self.node.leader_id != 0:
            return handler
        md = handler_call_details.invocation_metadata or ()
        if any(k == "hasleader" and v == "true" for k, v in md):
            return _refusal(handler)
        return handler


def _refusal(handler: Any) -> Any:
    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAVAILABLE, NoLeader.message)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAVAILABLE, NoLeader.message)
        yield  # pragma: no cover - makes this an async generator

    kw = {"request_deserializer": handler.request_deserializer,
          "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **kw)
    return grpc.unary_unary_rpc_method_handler(refuse, **kw)


def use_uvloop() -> bool:
    """Make the next event loop created by ``asyncio.run`` (or ``new_event_loop``) a uvloop
    loop, unless ``RAFTCRON_UVLOOP=0``. Returns whether it did.

    A coord member spends most of its CPU in grpc.aio's per-call machinery, which is made of
    asyncio futures, tasks and callbacks; on uvloop's loop a request costs about a fifth
    less CPU (docs/benchmarks.md). Nothing in coord depends on which loop runs it.
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

    What a member holds after recovery and start — the imported modules (grpc, protobuf,
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
        self._local: LocalTarget | None = None
        self._peer_h2: H2Server | None = None
        self._peer_grpc: grpc.aio.Server | None = None
        self.watch = WatchService(self.core)

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
        if kind == "h2":
            peers: Any = _Collect()
            raft_pb2_grpc.add_PeerServicer_to_server(peer_service, peers)
            table_: dict[str, Any] = peers.handlers
            peer_h2 = H2Server(lambda call: table_.get(call.method), max_receive=PEER_RECV_LIMIT)
            await peer_h2.start(self.config.listen_peer)
            self._peer_h2 = peer_h2
        else:
            peer_server = grpc.aio.server(options=PEER_GRPC_OPTIONS)
            raft_pb2_grpc.add_PeerServicer_to_server(peer_service, peer_server)
            if peer_server.add_insecure_port(self.config.listen_peer) == 0:
                raise OSError(f"cannot listen on {self.config.listen_peer}")
            await peer_server.start()
            self._peer_grpc = peer_server
        self.node.start()
        table: Any = _Collect()
        rpc_pb2_grpc.add_KVServicer_to_server(KVService(self.core), table)
        rpc_pb2_grpc.add_LeaseServicer_to_server(LeaseService(self.core), table)
        rpc_pb2_grpc.add_WatchServicer_to_server(self.watch, table)
        rpc_pb2_grpc.add_MaintenanceServicer_to_server(MaintenanceService(self.core), table)
        rpc_pb2_grpc.add_ClusterServicer_to_server(ClusterService(self.core), table)
        rpc_pb2_grpc.add_AuthServicer_to_server(AuthService(self.core), table)
        handlers = ClientHandlers(self.node, table.handlers)
        self._local = LocalTarget(handlers.service, max_receive=RECV_LIMIT)
        if kind == "h2":
            h2 = H2Server(handlers.service, max_receive=RECV_LIMIT)
            if self._standalone:
                freeze_startup_heap()  # before the first client request, not during one
            await h2.start(self.config.listen_client)
            self._h2 = h2
        else:
            server = grpc.aio.server(options=GRPC_OPTIONS)
            server.add_generic_rpc_handlers((handlers,))
            port = server.add_insecure_port(self.config.listen_client)
            if port == 0:
                raise OSError(f"cannot listen on {self.config.listen_client}")
            if self._standalone:
                freeze_startup_heap()
            await server.start()
            self._grpc = server
        self.core.start()
        log.info("coord.serving", name=self.config.name, client=self.config.listen_client,
                 grpc_server=kind,
                 member_id=f"{self.node.member_id:x}", data_dir=str(self.config.data_dir),
                 revision=self.applier.current_revision)

    def local_target(self) -> LocalTarget:
        """This member's client services for a client in the same process (started only)."""
        if self._local is None:
            raise RuntimeError("the server is not started")
        return self._local

    async def stop(self, grace: float = 1.0) -> None:
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
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
