"""The composition root of a member: CoordServer wires the node (storage, Raft, applier,
lessor, watch hub), the gRPC services over it (``coord.api``, through the narrow interfaces
``Core`` provides) and the listeners (``coord.rpc``). It is the one module of
``coord.server`` that imports the API adapters (the rules: tests/layering.py)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from coord.api.services import ClientHandlers, client_handlers
from coord.api.watch import WatchService
from coord.auth.store import AuthStore
from coord.limits import RECV_LIMIT
from coord.ops.grpc_health import health_handlers
from coord.process import freeze_startup_heap
from coord.rpc.h2.server import H2Server
from coord.server.apply import Applier
from coord.server.config import ServerConfig
from coord.server.core import Core
from coord.server.raft_node import RaftNode
from coord.server.tls_reload import TLSReloader, dialer_context
from coord.server.transport import PEER_RECV_LIMIT, PeerIdentity, PeerService, peer_handlers

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from coord.rpc.local import LocalTarget

log = structlog.get_logger("coord.server")

WAIT_LOG_EVERY = 5.0
"""Seconds between two ``member.waiting_for_peers`` lines while a member knows no leader."""

class CoordServer:
    """One coord member serving the etcd v3 API on ``config.listen_client``.

    ``freeze_heap``: once recovered and ready to serve, freeze the heap it holds then
    (:func:`coord.process.freeze_startup_heap`) — for a member that owns its process (the
    CLI passes :func:`coord.process.gc_freeze_enabled`); tests sharing a process don't.
    ``sighup``: reload the certificates on SIGHUP (the CLI's members, which own their
    process)."""

    def __init__(self, config: ServerConfig, *, freeze_heap: bool = False,
                 sighup: bool = False, metrics: CollectorRegistry | None = None) -> None:
        self.freeze_heap = freeze_heap
        self.sighup = sighup
        self.config = config
        self.applier = Applier(auth=AuthStore(config.auth_token_ttl))
        self.metrics = metrics
        """etcd's series of this member go here (``coord.ops``); None: no metrics, and
        the plain node with no counters."""
        node_class = RaftNode
        if metrics is not None:
            from coord.ops.node import MeteredRaftNode  # noqa: PLC0415 - metrics only

            node_class = MeteredRaftNode
        # Every member runs Raft, a one-member cluster too (as etcd does).
        self.node = node_class(config, self.applier, on_applied=self._on_applied,
                               join=config.initial_cluster_state == "existing")
        self.core = Core(self.node, self.applier, config)
        if metrics is not None:
            self._meter(metrics)
        peer = config.peer_tls
        if peer is not None:  # dial peers with this member's peer certificate
            self.node.transport.peer_ssl = dialer_context(peer)
            if peer.trusted_ca_file is not None:  # peers prove which member they are
                self.node.transport.identity = PeerIdentity(lambda: self.node.membership,
                                                            peer.allowed_cn)
        self.tls_reloader = TLSReloader(config, self.node.transport)
        self._tls_watch: asyncio.Task[None] | None = None
        self._h2: H2Server | None = None
        self._client: ClientHandlers | None = None
        self._local: LocalTarget | None = None
        self._stopped = False
        self._peer_h2: H2Server | None = None
        self.watch = WatchService(self.core)
        self._waiting: asyncio.Task[None] | None = None

    def _on_applied(self) -> None:
        self.watch.notify()

    def _meter(self, registry: CollectorRegistry) -> None:
        """Register etcd's series over this member and hook the counters in."""
        from coord.ops.etcd_metrics import EtcdMetrics  # noqa: PLC0415 - metrics only
        from coord.ops.node import MeteredRaftNode  # noqa: PLC0415

        node = self.node
        assert isinstance(node, MeteredRaftNode)
        applier = self.applier
        em = EtcdMetrics(registry, node, self.core.approximate_size,
                         lambda: len(applier.store))
        node.on_fsync = em.fsync
        transport = node.transport
        unreachable = transport.report_unreachable

        def report_unreachable(peer: int) -> None:  # a failed or dropped send to ``peer``
            em.peer_send_failed(peer)
            unreachable(peer)

        transport.report_unreachable = report_unreachable

    def health_check(self) -> Any:
        """etcd's ``/health`` check of this member (a ``coord.ops.health.Check``)."""
        from coord.ops.health import member_check  # noqa: PLC0415

        return member_check(self.core)

    async def start(self) -> None:
        """Recover from disk, then start serving. Raises StorageError on a damaged WAL."""
        exposed = self.config.plaintext_exposed()
        if exposed:  # allowed by --insecure-listen (the config refuses it otherwise)
            log.warning("coord.insecure_listen", name=self.config.name, plaintext=exposed,
                        hint="anyone who reaches these ports can write jobs; give them TLS "
                        "(docs/security.md)")
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        if self.node.join and not (self.config.data_dir / "wal").exists():
            await self.node.discover_cluster()
        self.node.recover()
        peer_service = PeerService(self.node.transport, self.node.serve_lease_renew,
                                   self.node.lookup_peer, self.node.serve_lease_ttl)
        peer_table = peer_handlers(peer_service)
        peer_h2 = H2Server(lambda call: peer_table.get(call.method), max_receive=PEER_RECV_LIMIT,
                           tls=self.config.peer_tls)
        await peer_h2.start(self.config.listen_peer)
        self._peer_h2 = peer_h2
        self.node.start()
        table = client_handlers(self.core, self.watch) | health_handlers(self.node)
        if self.metrics is not None:
            from coord.ops.grpc_metrics import HandledCounts, instrument  # noqa: PLC0415

            table = instrument(table, HandledCounts(self.metrics))
        self._client = client = ClientHandlers(self.node, table)
        if self.freeze_heap:
            freeze_startup_heap()  # before the first client request, not during one
        h2 = H2Server(client.service, max_receive=RECV_LIMIT, tls=self.config.client_tls)
        await h2.start(self.config.listen_client)
        self._h2 = h2
        self.core.start()
        loop = asyncio.get_running_loop()
        self._waiting = loop.create_task(self._report_waiting())
        self._tls_watch = loop.create_task(self.tls_reloader.watch())
        if self.sighup:
            loop.add_signal_handler(signal.SIGHUP, self.tls_reloader.reload, "SIGHUP")
        peer = self.config.peer_tls
        if peer is not None and peer.trusted_ca_file is None:
            log.warning("coord.peer_identity_unchecked", name=self.config.name,
                        hint="without --peer-trusted-ca-file peers' certificates are not "
                        "verified: anyone who reaches the peer port can speak as a member")
        log.info("coord.serving", name=self.config.name, client=self.config.listen_client,
                 client_tls=self.config.client_tls is not None,
                 peer_tls=self.config.peer_tls is not None,
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
        if self._tls_watch is not None:
            self._tls_watch.cancel()
        if self.sighup:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._local is not None:
            self._local.close()  # in-process streams end as network ones do
        await self.core.stop()
        await self.watch.close()
        if self._h2 is not None:
            await self._h2.stop(grace)
        await self.node.stop()
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
