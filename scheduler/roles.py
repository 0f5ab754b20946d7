"""raftcron's least-privilege roles in the store's own auth (etcd's Auth service, on coord
or a real etcd): what ``raftcron auth bootstrap`` creates, and the check that an identity
may do a worker's writes (docs/security.md, "raftcron's roles")."""

from __future__ import annotations

from typing import Any

import grpc

from coord.client import Client, Compare, ServerError, UnavailableError, prefix_end, put
from coord.client.channels import Endpoint
from coord.pb import auth_pb2, rpc_pb2, rpc_pb2_grpc
from scheduler import keys

READ = auth_pb2.Permission.READ
READWRITE = auth_pb2.Permission.READWRITE

ADMIN, WORKER, VIEWER = "raftcron-admin", "raftcron-worker", "raftcron-viewer"
WORKER_WRITES = (keys.LOCKS, keys.RUNS, keys.WORKERS, keys.KILLERS)
"""What a worker writes: its claims (locks and run records, in one txn), its session
record, and the kill requests of runs that outlive their timeout."""

ROLES: dict[str, list[tuple[Any, str]]] = {
    # Everything under /cron/: job definitions, trigger, kill and suspend requests, the
    # history (delete), the audit trail.
    ADMIN: [(READWRITE, keys.ROOT)],
    WORKER: [(READ, keys.ROOT), *((READWRITE, p) for p in WORKER_WRITES)],
    # Read only: jobs, runs (with their output tails), workers, locks, audit.
    VIEWER: [(READ, keys.ROOT)],
}
"""Each role's permissions: (READ or READWRITE, key prefix)."""

ROLE_EXISTS = "etcdserver: role name already exists"


async def _auth_call(client: Client, name: str, req: Any) -> Any:
    async def run(ep: Endpoint, t: float) -> Any:
        stub: Any = rpc_pb2_grpc.AuthStub(ep.channel)
        md: tuple[tuple[str, str], ...] = ()
        token = await ep.tokens.get(ep.channel, t) if ep.tokens is not None else ""
        if token:
            md = (("token", token),)
        return await getattr(stub, name)(req, timeout=t, metadata=md)
    return await client._call(run, idempotent=True)


async def bootstrap(client: Client) -> list[dict[str, Any]]:
    """Create the roles and grant their permissions; what exists already is kept (a
    grant of a permission the role has is a no-op in etcd)."""
    done: list[dict[str, Any]] = []
    for role, perms in ROLES.items():
        created = True
        try:
            await _auth_call(client, "RoleAdd", rpc_pb2.AuthRoleAddRequest(name=role))
        except ServerError as err:
            if err.message != ROLE_EXISTS:
                raise
            created = False
        for kind, prefix in perms:
            key = prefix.encode()
            perm = auth_pb2.Permission(permType=kind, key=key, range_end=prefix_end(key))
            await _auth_call(client, "RoleGrantPermission",
                             rpc_pb2.AuthRoleGrantPermissionRequest(name=role, perm=perm))
        done.append({"role": role, "created": created,
                     "permissions": [f"{auth_pb2.Permission.Type.Name(k)} {p}*"
                                     for k, p in perms]})
    return done


async def may_work(client: Client, worker: str) -> str | None:
    """Why this client's identity cannot run a worker, or None. A txn whose compare never
    holds but whose branch writes the worker's record: etcd checks every op of both
    branches, so it is refused unless the identity may write there, and it changes
    nothing (not even the revision) when allowed."""
    key = keys.worker_key(worker)
    try:
        await client.txn([Compare.version(key) < 0], [put(key, b"")], [])
    except ServerError as err:
        if err.code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED) \
                or "permission denied" in err.message:
            return (f"this identity may not write the worker's keys ({key}): a worker "
                    f"needs the {WORKER} role ({err.message})")
        raise
    return None


class IdentityRefused(Exception):
    """The agent's worker identity may not do a worker's writes (its message says why)."""


async def agent_identity(client: Client, worker: str, auth: Any) -> None:
    """The agent's check of :func:`check_worker_identity`, once its member serves; a
    store without a leader yet is left to the worker."""
    if auth is None:
        return
    try:
        why = await may_work(client, worker)
    except UnavailableError:
        return
    if why is not None:
        raise IdentityRefused(why)


