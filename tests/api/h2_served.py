"""What the tests of coord's gRPC server (test_h2_server*.py) share: a small test service
(echo, count, sum, bidi), a server serving it on 127.0.0.1 port 0 (:func:`serving`), and the
waits for a grpcio call's outcome.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from coord.rpc.h2.server import (
    CallDetails,
    H2Server,
    ServicerContext,
)
from tests.api.h2_support import (
    LISTEN,
    ident,
    pattern,
    stream_stream,
    stream_unary,
    unary,
    unary_stream,
    within,
)

if TYPE_CHECKING:
    from tests.api.h2_support import Handler


MAX_RECEIVE = 4 << 20


CLIENT_OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
                  ("grpc.max_send_message_length", 64 << 20)]


ECHO = "/test.S/Echo"


COUNT = "/test.S/Count"


SUM = "/test.S/Sum"


BIDI = "/test.S/Bidi"


async def echo(request: bytes, context: ServicerContext) -> bytes:
    return b"echo:" + request


async def count(request: bytes, context: ServicerContext) -> AsyncIterator[bytes]:
    for i in range(int(request)):
        yield b"%d" % i


async def total(requests: AsyncIterator[bytes], context: ServicerContext) -> bytes:
    return b"%d" % sum([int(r) async for r in requests])


async def bidi_echo(requests: AsyncIterator[bytes],
                    context: ServicerContext) -> AsyncIterator[bytes]:
    async for request in requests:
        yield b"echo:" + request


BASIC: dict[str, Handler] = {ECHO: unary(echo), COUNT: unary_stream(count),
                             SUM: stream_unary(total), BIDI: stream_stream(bidi_echo)}


@dataclass
class Served:
    server: H2Server
    port: int
    channel: grpc.aio.Channel
    seen: list[CallDetails] = field(default_factory=list)

    def unary(self, method: str) -> Any:
        return self.channel.unary_unary(method, request_serializer=ident,
                                        response_deserializer=ident)

    def unary_stream(self, method: str) -> Any:
        return self.channel.unary_stream(method, request_serializer=ident,
                                         response_deserializer=ident)

    def stream_unary(self, method: str) -> Any:
        return self.channel.stream_unary(method, request_serializer=ident,
                                         response_deserializer=ident)

    def stream_stream(self, method: str) -> Any:
        return self.channel.stream_stream(method, request_serializer=ident,
                                          response_deserializer=ident)


@contextlib.asynccontextmanager
async def serving(handlers: dict[str, Handler], max_receive: int = MAX_RECEIVE,
                  options: Iterable[tuple[str, Any]] = ()) -> AsyncIterator[Served]:
    """An H2Server on a free local port serving ``handlers``, and a grpcio channel to it."""
    seen: list[CallDetails] = []

    def resolve(details: CallDetails) -> Handler | None:
        seen.append(details)
        return handlers.get(details.method)

    server = H2Server(resolve, max_receive)
    port = await server.start(LISTEN)
    try:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                            options=[*CLIENT_OPTIONS, *options])
        try:
            yield Served(server, port, channel, seen)
        finally:
            await channel.close(None)
    finally:
        await server.stop(0)


async def failure(call: Any) -> grpc.aio.AioRpcError:
    """Await a call that must fail; its error."""
    try:
        await within(call)
    except grpc.aio.AioRpcError as err:
        return err
    raise AssertionError("the call succeeded")


async def sized(request: bytes, context: ServicerContext) -> bytes:
    return pattern(int(request))
