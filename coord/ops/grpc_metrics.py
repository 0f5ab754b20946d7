"""``grpc_server_handled_total`` (go-grpc-prometheus, as etcd exports it) for the client
port: each method handler wrapped to count how its call ended, by type, service, method
and code. Applied to the method table by the composition root when metrics are on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from coord.rpc.handlers import Context, MethodHandler, RpcAbort
from coord.rpc.status import StatusCode

GRPC_TYPES = {(False, False): "unary", (False, True): "server_stream",
              (True, False): "client_stream", (True, True): "bidi_stream"}


def code_name(code: StatusCode) -> str:
    """go-grpc-prometheus's label: Go's ``codes.Code.String()`` (``DeadlineExceeded``,
    ``Canceled`` with one l)."""
    if code is StatusCode.OK:
        return "OK"
    if code is StatusCode.CANCELLED:
        return "Canceled"
    return "".join(part.capitalize() for part in code.name.split("_"))


def handled_counter(registry: CollectorRegistry) -> Counter:
    return Counter("grpc_server_handled_total",
                   "Total number of RPCs completed on the server, regardless of success or "
                   "failure.", ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
                   registry=registry)


def instrument(table: Mapping[str, MethodHandler], counter: Counter) -> dict[str, MethodHandler]:
    """``table`` with every handler counting its calls' codes in ``counter``."""
    return {path: _counted(path, h, counter) for path, h in table.items()}


def _counted(path: str, handler: MethodHandler, counter: Counter) -> MethodHandler:
    service, _, method = path.lstrip("/").partition("/")
    kind = GRPC_TYPES[(handler.request_streaming, handler.response_streaming)]
    by_code = {code: counter.labels(kind, service, method, code_name(code))
               for code in StatusCode}
    inner = handler.behaviour

    def ended(context: Context, err: BaseException | None) -> None:
        if isinstance(err, RpcAbort):
            code = err.code
        elif isinstance(err, (asyncio.CancelledError, GeneratorExit)):
            code = StatusCode.CANCELLED
        elif err is not None:
            code = StatusCode.UNKNOWN
        else:
            code = getattr(context, "code", StatusCode.OK)
        by_code[code].inc()

    async def unary(request: Any, context: Context) -> Any:
        try:
            response = await inner(request, context)
        except BaseException as err:
            ended(context, err)
            raise
        ended(context, None)
        return response

    async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
        responses = inner(request, context)
        try:
            async for response in responses:
                yield response
        except BaseException as err:
            ended(context, err)
            raise
        finally:
            aclose = getattr(responses, "aclose", None)
            if aclose is not None:
                await aclose()
        ended(context, None)

    return handler.with_behaviour(stream if handler.response_streaming else unary)
