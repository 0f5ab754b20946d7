"""How the client reaches an endpoint, and what it reads from a failed call to decide
whether to try another (the failover rules in :mod:`coord.client.client`)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from coord.client.auth import TokenSource, authed
from coord.client.errors import ClientError
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


@dataclass(frozen=True)
class ClientTLS:
    """TLS to the endpoints, with etcdctl's flags: ``--cacert`` (the CA the servers'
    certificates are verified against; the system's CAs without it), ``--cert``/``--key``
    (this client's certificate, for a server with ``--client-cert-auth``) and
    ``--insecure-skip-tls-verify`` (encrypt, but accept whatever certificate the server
    shows: trust on first use of its certificate, for tests and bootstrapping only)."""

    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure_skip_verify: bool = False

    def credentials(self, address: str) -> tuple[Any, list[tuple[str, Any]]]:
        """grpc's channel credentials for ``address`` and the extra channel options."""
        options: list[tuple[str, Any]] = []
        root = self.cacert.read_bytes() if self.cacert is not None else None
        if self.insecure_skip_verify:
            # grpc has no "don't verify": trust the certificate the server shows now, under
            # the name it carries (its first DNS name or IP address).
            root, name = _server_certificate(address)
            if name:
                options.append(("grpc.ssl_target_name_override", name))
        creds = grpc.ssl_channel_credentials(
            root_certificates=root,
            private_key=self.key.read_bytes() if self.key is not None else None,
            certificate_chain=self.cert.read_bytes() if self.cert is not None else None)
        return creds, options


def _server_certificate(address: str) -> tuple[bytes, str]:
    """The PEM certificate ``address`` presents, unverified, and a name it is valid for."""
    host, _, port = address.rpartition(":")
    try:
        pem = ssl.get_server_certificate((host.strip("[]"), int(port)), timeout=5)
    except OSError as err:
        raise ClientError(f"{address}: cannot fetch its certificate: {err}") from None
    try:
        from cryptography import x509  # noqa: PLC0415 - only this rare path parses certificates
    except ImportError:
        raise ClientError("--insecure-skip-tls-verify needs the cryptography package "
                          "(pip install cryptography)") from None

    cert = x509.load_pem_x509_certificate(pem.encode())
    name = ""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [*map(str, sans.get_values_for_type(x509.IPAddress)),
                 *sans.get_values_for_type(x509.DNSName)]
        name = names[0] if names else ""
    except x509.ExtensionNotFound:
        pass
    return pem.encode(), name


SCHEMES = ("http://", "https://")


def split_scheme(endpoint: str) -> tuple[str, bool]:
    """``https://h:p`` → (``h:p``, True); ``http://h:p`` or ``h:p`` → (``h:p``, False)."""
    if endpoint.startswith("https://"):
        return endpoint.removeprefix("https://"), True
    return endpoint.removeprefix("http://"), False


def network_channel(address: str, tls: ClientTLS | None = None) -> Any:
    """A grpc.aio channel to ``address`` with the client's options; over TLS with ``tls``."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    creds, extra = tls.credentials(address)
    return grpc.aio.secure_channel(address, creds, options=CHANNEL_OPTIONS + extra)


class Endpoint:
    __slots__ = ("address", "channel", "cluster", "kv", "lease", "maint", "tokens", "watch")

    def __init__(self, address: str, channels: ChannelFactory | None = None,
                 tls: ClientTLS | None = None, tokens: TokenSource | None = None) -> None:
        self.address = address
        channel = channels(address) if channels is not None else None
        self.channel = channel if channel is not None else network_channel(address, tls)
        # The generated stubs are typed for the sync API; on an aio channel every method
        # returns an awaitable or a stream call, so they are held as Any.
        # With credentials (``tokens``), every call carries the token (coord.client.auth).
        self.tokens = tokens
        ch = self.channel
        self.kv: Any = authed(rpc_pb2_grpc.KVStub(ch), tokens, ch)
        self.lease: Any = authed(rpc_pb2_grpc.LeaseStub(ch), tokens, ch)
        self.maint: Any = authed(rpc_pb2_grpc.MaintenanceStub(ch), tokens, ch)
        self.cluster: Any = authed(rpc_pb2_grpc.ClusterStub(ch), tokens, ch)
        self.watch: Any = authed(rpc_pb2_grpc.WatchStub(ch), tokens, ch)

    async def login(self, timeout: float | None = None) -> None:
        """Fetch the token before a stream call (they cannot wait for it)."""
        if self.tokens is not None:
            await self.tokens.get(self.channel, timeout)
