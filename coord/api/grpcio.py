"""The grpcio fallback (``RAFTCRON_GRPC_SERVER=grpcio``): coord's method handlers
(:class:`coord.rpc.handlers.MethodHandler`) served by ``grpc.aio.server``.

This module imports grpc; a member imports it only on that path (docs/grpc-server.md).
The services see grpcio's context through :class:`_Context`, which converts coord's
:class:`~coord.rpc.status.StatusCode` to grpcio's at this boundary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from coord.rpc.handlers import Context, MethodHandler
from coord.rpc.status import StatusCode, grpc_code

GrpcContext = grpc.aio.ServicerContext[Any, Any]


class _Context:
    """grpcio's per-call context as coord's services use it
    (:class:`coord.rpc.handlers.Context`)."""

    __slots__ = ("_context",)

    def __init__(self, context: GrpcContext) -> None:
        self._context = context

    async def abort(self, code: StatusCode, details: str = "",
                    trailing_metadata: Sequence[tuple[str, str]] = ()) -> NoReturn:
        await self._context.abort(grpc_code(code), details, tuple(trailing_metadata))
        raise AssertionError("unreachable: grpcio's abort raises")

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]]:
        return tuple(self._context.invocation_metadata() or ())

    def peer(self) -> str:
        return self._context.peer()

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    def set_code(self, code: StatusCode) -> None:
        self._context.set_code(grpc_code(code))

    def set_details(self, details: str) -> None:
        self._context.set_details(details)


def grpcio_handler(handler: MethodHandler) -> grpc.RpcMethodHandler[Any, Any]:
    """The same method as a grpcio method handler, its behaviour given :class:`_Context`."""
    fn = handler.behaviour
    behaviour: Callable[[Any, GrpcContext], Any]
    if handler.response_streaming:
        async def streaming(request: Any, context: GrpcContext) -> AsyncIterator[Any]:
            responses = fn(request, _Context(context))
            try:
                async for response in responses:
                    yield response
            finally:
                aclose = getattr(responses, "aclose", None)
                if aclose is not None:
                    await aclose()
        behaviour = streaming
    else:
        async def unary(request: Any, context: GrpcContext) -> Any:
            return await fn(request, _Context(context))
        behaviour = unary
    make = {(False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
            }[(handler.request_streaming, handler.response_streaming)]
    return make(behaviour, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


class GenericHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Every method a resolver knows behind one grpcio generic handler (a lookup per call:
    cheaper on grpc.aio than registered methods, see ``coord.server.server``). Each
    handler the resolver returns is converted once; the resolver must return a bounded
    set of handler objects (not a new one per call)."""

    def __init__(self, resolve: Callable[[Any], MethodHandler | None]) -> None:
        self._resolve = resolve
        self._converted: dict[MethodHandler, grpc.RpcMethodHandler[Any, Any]] = {}

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = self._resolve(handler_call_details)
        if handler is None:
            return None
        converted = self._converted.get(handler)
        if converted is None:
            converted = self._converted[handler] = grpcio_handler(handler)
        return converted


async def serve(address: str, resolve: Callable[[Any], MethodHandler | None],
                options: Sequence[tuple[str, Any]]) -> grpc.aio.Server:
    """A started ``grpc.aio.server`` on ``address`` serving what ``resolve`` finds.
    Raises OSError if it cannot listen."""
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((GenericHandler(resolve),))
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    return server


if TYPE_CHECKING:
    def _is_a_context(context: _Context) -> Context:
        """mypy checks that the services can be given this context."""
        return context
