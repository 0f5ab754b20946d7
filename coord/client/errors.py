"""Errors raised by :mod:`coord.client`.

A server error keeps etcd's message and gRPC code, so callers can match on the typed
class (``CompactedError``) or on the code. Transport failures that exhausted every
endpoint surface as :class:`UnavailableError`.
"""

from __future__ import annotations

import grpc


class ClientError(Exception):
    """Base class for every error the client raises."""


class ServerError(ClientError):
    """The server answered with a non-OK status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{message} ({code.name})")
        self.code = code
        self.message = message


class UnavailableError(ServerError):
    """No endpoint could serve the request (or the cluster has no leader)."""


class CompactedError(ServerError):
    """The requested revision has been compacted away."""

    def __init__(self, code: grpc.StatusCode, message: str, compact_revision: int = 0) -> None:
        super().__init__(code, message)
        self.compact_revision = compact_revision


class FutureRevisionError(ServerError):
    """The requested revision is ahead of the store."""


class LeaseNotFoundError(ServerError):
    """The lease does not exist (never granted, revoked or expired)."""


class WatchCanceledError(ClientError):
    """The server cancelled a watch for a reason other than compaction."""


_BY_MESSAGE: dict[str, type[ServerError]] = {
    "etcdserver: mvcc: required revision has been compacted": CompactedError,
    "etcdserver: mvcc: required revision is a future revision": FutureRevisionError,
    "etcdserver: requested lease not found": LeaseNotFoundError,
}


def from_rpc_error(err: grpc.aio.AioRpcError) -> ServerError:
    """Map a gRPC error to the most specific client error."""
    code = err.code()
    message = err.details() or ""
    cls = _BY_MESSAGE.get(message)
    if cls is not None:
        return cls(code, message)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.CANCELLED):
        return UnavailableError(code, message)
    return ServerError(code, message)
