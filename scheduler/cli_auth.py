"""``raftcron auth bootstrap`` (scheduler.roles), ``raftcron audit`` (scheduler.audit),
and the worker's identity check before it starts."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from scheduler.cli_app import EndpointsOpt, OutputOpt, app, check_output, client_call, fail

auth_app = typer.Typer(help="Set up raftcron's roles in the store's authentication.",
                       no_args_is_help=True, rich_markup_mode=None)
app.add_typer(auth_app, name="auth")

@auth_app.command("bootstrap")
def bootstrap_cmd(endpoints: EndpointsOpt = "127.0.0.1:2379",
                  output: OutputOpt = "table") -> None:
    """Create the roles raftcron-admin, raftcron-worker and raftcron-viewer (idempotent).

    Run it as root once auth is on (or before `etcdctl auth enable`), then grant the
    roles to users: etcdctl user grant-role alice raftcron-admin.
    """
    from scheduler.roles import bootstrap

    check_output(output)
    done = client_call(endpoints, bootstrap)
    if output == "json":
        typer.echo(json.dumps(done, indent=2))
        return
    for row in done:
        state = "created" if row["created"] else "exists"
        typer.echo(f"{row['role']:<16} {state:<8} {', '.join(row['permissions'])}")


def check_worker_identity(endpoints: list[str], worker: str, tls: Any, auth: Any) -> None:
    """Refuse to start a worker whose identity is not allowed its writes (exit 1: the
    store refuses the operation, as for any command; the flags themselves are valid). A
    store not reachable yet is left to the worker, which waits for it."""
    from coord.client import Client, ClientError, UnavailableError
    from scheduler.roles import may_work

    if auth is None:
        return

    async def probe() -> str | None:
        async with Client(endpoints, timeout=5, tls=tls, auth=auth) as client:
            return await may_work(client, worker)
    try:
        why = asyncio.run(probe())
    except ClientError as err:
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
