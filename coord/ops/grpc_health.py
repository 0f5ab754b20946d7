"""The standard gRPC health service (``grpc.health.v1.Health``) on the client port, as
etcd serves it: ``Check`` for the whole server (service ``""``) answers SERVING while the
member knows a leader and NOT_SERVING otherwise; another service name is NOT_FOUND
``unknown service``. ``Watch`` is UNIMPLEMENTED (``grpc_health_probe`` only calls
``Check``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from coord.pb import health_pb2
from coord.rpc.handlers import Context, MethodHandler, service_handlers
from coord.rpc.status import StatusCode

Status = health_pb2.HealthCheckResponse


class Leadership(Protocol):
    @property
    def leader_id(self) -> int: ...


class HealthService:
    def __init__(self, node: Leadership) -> None:
        self.node = node

    async def Check(self, request: health_pb2.HealthCheckRequest,
                    context: Context) -> health_pb2.HealthCheckResponse:
        if request.service:
            await context.abort(StatusCode.NOT_FOUND, "unknown service")
        return Status(status=Status.SERVING if self.node.leader_id else Status.NOT_SERVING)

    async def Watch(self, request: health_pb2.HealthCheckRequest,
                    context: Context) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        await context.abort(StatusCode.UNIMPLEMENTED, "method Watch not implemented")
        yield Status()  # pragma: no cover - makes this an async generator


def health_handlers(node: Leadership) -> dict[str, MethodHandler]:
    """``/grpc.health.v1.Health/Check`` and ``/Watch`` → handlers."""
    return service_handlers(health_pb2.DESCRIPTOR.services_by_name["Health"],
                            HealthService(node))
