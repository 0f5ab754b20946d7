"""How the client reaches an endpoint, and what it reads from a failed call to decide
whether to try another (the failover rules in :mod:`coord.client.client`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

from coord.pb import rpc_pb2_grpc

EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from the stubs

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.enable_retries", 0),
]

# Messages for which the request provably never reached the state machine.
SAFE_TO_RETRY = ("etcdserver: no leader", "etcdserver: not leader", "etcdserver: server stopped")


CLOSE_GRACE = 30.0
"""Seconds a replaced channel stays open for the calls still running on it."""


class CancelledRpc(grpc.aio.AioRpcError):
    """An RPC cancelled under its caller (its channel was closed): outcome unknown."""

    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.CANCELLED, grpc.aio.Metadata(),
                         grpc.aio.Metadata(), details="rpc cancelled (channel closed)",
                         debug_error_string="")


def caller_cancelled() -> bool:
    """True when the running task itself is being cancelled (as opposed to an RPC it was
    awaiting having been cancelled under it, which grpc.aio also reports as CancelledError)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def transport_failure(err: grpc.aio.AioRpcError) -> bool:
    """True when the endpoint itself failed (worth trying another), not when a reachable
    server answered with an etcd error such as "leader changed"."""
    details = err.details() or ""
    return not details.startswith("etcdserver:")


def not_sent(err: grpc.aio.AioRpcError) -> bool:
    """True when the failure proves the request was not handed to the server's log."""
    if err.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    details = err.details() or ""
    return details in SAFE_TO_RETRY or "failed to connect" in details.lower() or (
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


class Endpoint:
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
