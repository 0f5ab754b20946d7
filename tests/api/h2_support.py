"""Helpers shared by the tests of coord's HTTP/2 server and client (tests/api/test_h2_*):
a bounded event-loop run (optionally on uvloop), bounded waits, and grpcio method handlers
that pass bytes through."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]

T = TypeVar("T")

TEST_TIMEOUT = 15.0
"""Bound on one test's whole event loop run."""
WAIT = 5.0
"""Bound on any single wait for an event, a call, a frame or a condition."""
LISTEN = "127.0.0.1:0"


def run(coro: Coroutine[Any, Any, T], *, uvloop: bool = False) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(TEST_TIMEOUT):
            return await coro

    if uvloop:
        import uvloop as uv
        with asyncio.Runner(loop_factory=uv.new_event_loop) as runner:
            return runner.run(bounded())
    return asyncio.run(bounded())


async def within(aw: Awaitable[T], timeout: float = WAIT) -> T:
    async with asyncio.timeout(timeout):
        return await aw


def ident(data: bytes) -> bytes:
    return data


def pattern(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


def unary(fn: Callable[..., Any], deserializer: Callable[[bytes], Any] = ident) -> Handler:
    return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=deserializer,
                                               response_serializer=ident)


def unary_stream(fn: Callable[..., Any]) -> Handler:
    return grpc.unary_stream_rpc_method_handler(fn, request_deserializer=ident,
                                                response_serializer=ident)


def stream_unary(fn: Callable[..., Any],
                 deserializer: Callable[[bytes], Any] = ident) -> Handler:
    return grpc.stream_unary_rpc_method_handler(fn, request_deserializer=deserializer,
                                                response_serializer=ident)


def stream_stream(fn: Callable[..., Any]) -> Handler:
    return grpc.stream_stream_rpc_method_handler(fn, request_deserializer=ident,
                                                 response_serializer=ident)


class Held:
    """A handler body that blocks until its call is cancelled: ``started`` is set once it
    runs, ``ended`` once the cancellation reached it."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.ended = asyncio.Event()

    async def hold(self) -> None:
        self.started.set()
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self.ended.set()
