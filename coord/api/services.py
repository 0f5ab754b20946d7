"""The client port's services as one method table, and the resolver the servers look calls
up in (``hasleader`` included)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from coord.api.auth import AuthMember, AuthService
from coord.api.auth_guard import guard_handlers
from coord.api.kv import KVService
from coord.api.lease import LeaseService
from coord.api.maintenance import ClusterService, Maintained, MaintenanceService
from coord.api.ports import ClusterMembers, Leases, RaftKV
from coord.errors import NoLeader
from coord.pb import rpc_pb2
from coord.rpc.handlers import Context, MethodHandler, service_handlers
from coord.rpc.status import StatusCode


class Member(RaftKV, Leases, Maintained, ClusterMembers, AuthMember, Protocol):
    """Everything the client port's services need of the member (``coord.api.ports``)."""


class Leadership(Protocol):
    @property
    def leader_id(self) -> int:
        """The leader this member knows of, 0 for none."""


def client_handlers(core: Member, watch: object) -> dict[str, MethodHandler]:
    """The client port's method table: every method of etcd's six services
    (``/etcdserverpb.KV/Range`` ... → handler), built from ``rpc.proto``'s descriptors.
    ``watch`` is the Watch service (it lives as long as the member: the composition root
    builds it). Every handler is behind the auth guard (``coord.api.auth_guard``)."""
    services: dict[str, object] = {
        "KV": KVService(core), "Lease": LeaseService(core), "Watch": watch,
        "Maintenance": MaintenanceService(core), "Cluster": ClusterService(core),
        "Auth": AuthService(core)}
    table: dict[str, MethodHandler] = {}
    for name, servicer in services.items():
        table.update(service_handlers(rpc_pb2.DESCRIPTOR.services_by_name[name], servicer))
    return guard_handlers(core, table)


class ClientHandlers:
    """Every client-port method behind one resolver, :meth:`service` (a dict lookup per
    call), for the h2 server and in-process calls.

    It also implements etcd's ``hasleader`` metadata: a request carrying
    ``hasleader=true`` fails at once with ``Unavailable: etcdserver: no leader`` when this
    member knows no leader (clients use it on watches so that they move to a member that
    is part of a quorum). The metadata is only looked at while there is no leader.
    """

    def __init__(self, node: Leadership, handlers: dict[str, MethodHandler]) -> None:
        self.node = node
        self.handlers = handlers
        self.refusals = {method: _refusal(h) for method, h in handlers.items()}

    def service(self, handler_call_details: Any) -> MethodHandler | None:
        handler = self.handlers.get(handler_call_details.method)
        if handler is None or self.node.leader_id != 0:
            return handler
        md = handler_call_details.invocation_metadata or ()
        if any(k == "hasleader" and v == "true" for k, v in md):
            return self.refusals[handler_call_details.method]
        return handler


def _refusal(handler: MethodHandler) -> MethodHandler:
    async def refuse(request: Any, context: Context) -> Any:
        await context.abort(StatusCode.UNAVAILABLE, NoLeader.message)

    async def refuse_stream(request: Any, context: Context) -> AsyncIterator[Any]:
        await context.abort(StatusCode.UNAVAILABLE, NoLeader.message)
        yield  # pragma: no cover - makes this an async generator

    return handler.with_behaviour(refuse_stream if handler.response_streaming else refuse)
