"""gRPC status codes for coord's server side, without grpcio.

A member serves both of its ports with coord's own HTTP/2 server (``coord.rpc.h2``), so
nothing on that path needs the ``grpc`` package — importing it costs a member about
13 MB of resident memory (docs/grpc-server.md). :class:`StatusCode` has grpcio's names
and numbers (the ``grpc-status`` values of the gRPC spec); code that hands a status to
grpcio (the in-process client's ``AioRpcError``) converts with :func:`grpc_code` at that
boundary.
"""

from __future__ import annotations

import enum
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc


class StatusCode(enum.Enum):
    """gRPC's status codes: the same names and numbers as ``grpc.StatusCode``."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def grpc_code(code: StatusCode) -> grpc.StatusCode:
    """The same status as grpcio's enum (imports grpc: only for code that talks to it)."""
    import grpc  # noqa: PLC0415 - the member's own path never gets here

    return grpc.StatusCode[code.name]


def is_grpcio_error(err: BaseException) -> bool:
    """Whether ``err`` is grpcio's ``AioRpcError``, without importing grpc: when grpc is
    not loaded, nothing can have raised one."""
    aio = sys.modules.get("grpc.aio")
    return aio is not None and isinstance(err, aio.AioRpcError)
