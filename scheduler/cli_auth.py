"""``raftcron auth bootstrap``: raftcron's least-privilege roles in the store's own auth
(etcd's Auth service, on coord or a real etcd), and the check that a worker's identity may
do a worker's writes before it starts (docs/security.md, "raftcron's roles")."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import grpc
import typer

from coord.client import Client, ClientError, prefix_end
from coord.client.channels import Endpoint
from coord.pb import auth_pb2, rpc_pb2, rpc_pb2_grpc
from scheduler import keys
from scheduler.cli_app import EndpointsOpt, OutputOpt, app, check_output, client_call, fail

auth_app = typer.Typer(help="Set up raftcron's roles in the store's authentication.",
                       no_args_is_help=True, rich_markup_mode=None)
app.add_typer(auth_app, name="auth")

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
    from coord.client import ServerError

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


@auth_app.command("bootstrap")
def bootstrap_cmd(endpoints: EndpointsOpt = "127.0.0.1:2379",
                  output: OutputOpt = "table") -> None:
    """Create the roles raftcron-admin, raftcron-worker and raftcron-viewer (idempotent).

    Run it as root once auth is on (or before `etcdctl auth enable`), then grant the
    roles to users: etcdctl user grant-role alice raftcron-admin.
    """
    check_output(output)
    done = client_call(endpoints, bootstrap)
    if output == "json":
        typer.echo(json.dumps(done, indent=2))
        return
    for row in done:
        state = "created" if row["created"] else "exists"
        typer.echo(f"{row['role']:<16} {state:<8} {', '.join(row['permissions'])}")


async def may_work(client: Client, worker: str) -> str | None:
    """Why this client's identity cannot run a worker, or None. A txn whose compare never
    holds but whose branch writes the worker's record: etcd checks every op of both
    branches, so it is refused unless the identity may write there, and it changes
    nothing (not even the revision) when allowed."""
    from coord.client import Compare, ServerError, put

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
    from coord.client import UnavailableError

    if auth is None:
        return
    try:
        why = await may_work(client, worker)
    except UnavailableError:
        return
    if why is not None:
        raise IdentityRefused(why)


def check_worker_identity(endpoints: list[str], worker: str, tls: Any, auth: Any) -> None:
    """Refuse to start a worker whose identity is not allowed its writes (exit 1: the
    store refuses the operation, as for any command; the flags themselves are valid). A
    store not reachable yet is left to the worker, which waits for it."""
    if auth is None:
        return

    async def probe() -> str | None:
        async with Client(endpoints, timeout=5, tls=tls, auth=auth) as client:
            return await may_work(client, worker)
    try:
        why = asyncio.run(probe())
    except ClientError as err:
        from coord.client import UnavailableError

        if isinstance(err, UnavailableError):
            return
        fail(f"the store at {','.join(endpoints)} refused the worker's identity: {err}")
        return
    if why is not None:
        fail(why)


@app.command("audit")
def audit_cmd(endpoints: EndpointsOpt = "127.0.0.1:2379", output: OutputOpt = "table",
              job: Annotated[str | None, typer.Option(
                  "--job", help="Only the records that name this job.")] = None,
              limit: Annotated[int, typer.Option(
                  "--limit", help="How many records, newest first (≥ 1).")] = 100) -> None:
    """Who changed a job, triggered, killed, suspended or resumed it: when, from where.

    Example:  raftcron audit --job nightly
    """
    from datetime import UTC, datetime

    from scheduler.audit import records
    from scheduler.cli_app import check_limit
    from scheduler.cli_output import emit

    check_output(output)
    check_limit(limit)
    rows = client_call(endpoints, lambda c: records(c, job, limit))
    if output == "table":
        for row in rows:
            row["at"] = datetime.fromtimestamp(row.get("at") or 0, UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
            row["jobs"] = ",".join(row.get("jobs") or [])
            row["from"] = f"{row.get('os_user')}@{row.get('host')} pid {row.get('pid')}"
            row["detail"] = ",".join(row.get("detail") or [])
    emit(output, rows, ["at", "who", "action", "jobs", "from", "detail"], "audit")
