"""Turning coord errors into gRPC statuses, the way etcd's v3rpc layer does."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog

from coord.errors import CoordError

log = structlog.get_logger("coord.api")

R = TypeVar("R")


def status_code(err: CoordError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, err.code_name, grpc.StatusCode.UNKNOWN)


def unary(fn: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Wrap a unary handler: a :class:`CoordError` becomes its etcd status and message."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> R:
        try:
            return await fn(self, request, context)
        except CoordError as err:
            await context.abort(status_code(err), err.message)
            raise  # unreachable: abort raises

    return wrapper
