"""Turning coord errors into gRPC statuses, the way etcd's v3rpc layer does."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from coord import errors
from coord.auth import InvalidAuthToken, PermissionDenied
from coord.errors import CoordError
from coord.rpc.handlers import Context
from coord.rpc.status import StatusCode

log = structlog.get_logger("coord.api")

R = TypeVar("R")


STATUS: dict[type[CoordError], StatusCode] = {
    errors.InvalidArgument: StatusCode.INVALID_ARGUMENT,
    errors.OutOfRange: StatusCode.OUT_OF_RANGE,
    errors.NotFound: StatusCode.NOT_FOUND,
    errors.FailedPrecondition: StatusCode.FAILED_PRECONDITION,
    errors.Unavailable: StatusCode.UNAVAILABLE,
    errors.ResourceExhausted: StatusCode.RESOURCE_EXHAUSTED,
    errors.Internal: StatusCode.INTERNAL,
    errors.Unimplemented: StatusCode.UNIMPLEMENTED,
    PermissionDenied: StatusCode.PERMISSION_DENIED,
    InvalidAuthToken: StatusCode.UNAUTHENTICATED,
}
"""The one table from coord's errors to gRPC status codes: by kind (the nearest base class
listed here); any other error is UNKNOWN, as etcd answers the errors v3rpc does not map."""


def status_code(err: CoordError) -> StatusCode:
    for cls in type(err).__mro__:
        code = STATUS.get(cls)
        if code is not None:
            return code
    return StatusCode.UNKNOWN


def unary(fn: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Wrap a unary handler: a :class:`CoordError` becomes its etcd status and message.
    (A request over ``coord.limits.RECV_LIMIT`` never gets here: both transports refuse it
    with grpc-go's wording.)"""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: Context) -> R:
        try:
            return await fn(self, request, context)
        except CoordError as err:
            await context.abort(status_code(err), err.message)
            raise  # unreachable: abort raises

    return wrapper
