"""``grpc_server_handled_total`` (go-grpc-prometheus, as etcd exports it) for the client
port: each method handler wrapped to count how its call ended, by type, service, method
and code. Applied to the method table by the composition root when metrics are on.

The counts are plain ints bumped on the event loop (no lock: every call ends there) and
read by a collector at scrape time; every method and code is exported from 0, as
go-grpc-prometheus initialises them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from coord.rpc.handlers import Context, MethodHandler, RpcAbort
from coord.rpc.status import StatusCode

GRPC_TYPES = {(False, False): "unary", (False, True): "server_stream",
              (True, False): "client_stream", (True, True): "bidi_stream"}
CODES = list(StatusCode)


def code_name(code: StatusCode) -> str:
    """go-grpc-prometheus's label: Go's ``codes.Code.String()`` (``DeadlineExceeded``,
    ``Canceled`` with one l)."""
    if code is StatusCode.OK:
        return "OK"
    if code is StatusCode.CANCELLED:
        return "Canceled"
    return "".join(part.capitalize() for part in code.name.split("_"))


class HandledCounts(Collector):
    """Per method, a count per status code (indexed by ``StatusCode.value``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.methods: dict[tuple[str, str, str], list[int]] = {}
        registry.register(self)

    def counts(self, kind: str, service: str, method: str) -> list[int]:
        size = max(c.value for c in CODES) + 1
        return self.methods.setdefault((kind, service, method), [0] * size)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "grpc_server_handled", "Total number of RPCs completed on the server, "
            "regardless of success or failure.",
            labels=["grpc_type", "grpc_service", "grpc_method", "grpc_code"])
        for (kind, service, method), counts in sorted(self.methods.items()):
            for code in CODES:
                family.add_metric([kind, service, method, code_name(code)],
                                  counts[code.value])
        yield family


def instrument(table: Mapping[str, MethodHandler],
               handled: HandledCounts) -> dict[str, MethodHandler]:
    """``table`` with every handler counting its calls' codes in ``handled``."""
    return {path: _counted(path, h, handled) for path, h in table.items()}


def _counted(path: str, handler: MethodHandler, handled: HandledCounts) -> MethodHandler:
    service, _, method = path.lstrip("/").partition("/")
    counts = handled.counts(GRPC_TYPES[(handler.request_streaming, handler.response_streaming)],
                            service, method)
    inner = handler.behaviour
    ok = StatusCode.OK.value

    def ended(context: Context, err: BaseException) -> None:
        if isinstance(err, RpcAbort):
            code = err.code
        elif isinstance(err, (asyncio.CancelledError, GeneratorExit)):
            code = StatusCode.CANCELLED
        else:
            code = StatusCode.UNKNOWN
        counts[code.value] += 1

    def done(context: Context) -> None:
        code = getattr(context, "code", StatusCode.OK)
        counts[ok if code is StatusCode.OK else code.value] += 1

    async def unary(request: Any, context: Context) -> Any:
        try:
            response = await inner(request, context)
        except BaseException as err:
            ended(context, err)
            raise
        done(context)
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
        done(context)

    return handler.with_behaviour(stream if handler.response_streaming else unary)
