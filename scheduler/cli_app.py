"""The raftcron command line's skeleton: the typer app and its groups, the options the
client commands share, and how a client command reaches the store and fails."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Annotated, Any

import typer

# grpc's core logs every failed TLS handshake to stderr, line after line while the client
# retries; a command prints one `Error:` line that says what failed, and a worker logs its
# store errors itself. Set before anything imports grpc; GRPC_VERBOSITY=ERROR brings it back.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from scheduler.cli_tls import (
    CLIENT_AUTH,
    CLIENT_TLS,
    CACertOpt,
    CertOpt,
    KeyOpt,
    PasswordFileOpt,
    PasswordOpt,
    SkipVerifyOpt,
    UserOpt,
    cert_cn,
    client_auth,
    client_tls,
)

# Plain help (rich_markup_mode=None): typer's rich help shows every flag, --help included,
# with a bogus `<bool>` value. --install-completion / --show-completion come from typer.
app = typer.Typer(
    name="raftcron",
    help="A distributed cron scheduler on an embedded, Raft-replicated, etcd-compatible store.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,  # an unexpected error is a plain traceback, not a box
)
coord_app = typer.Typer(help="Run or inspect a coord store member.", no_args_is_help=True,
                        rich_markup_mode=None)
app.add_typer(coord_app, name="coord")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"raftcron {version('raftcron')}")
        except PackageNotFoundError:
            from scheduler.worker import VERSION

            typer.echo(f"raftcron {VERSION}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Print raftcron's version and exit.")] = False,
          cacert: CACertOpt = None, cert: CertOpt = None, key: KeyOpt = None,
          insecure_skip_tls_verify: SkipVerifyOpt = False, user: UserOpt = None,
          password: PasswordOpt = None, password_file: PasswordFileOpt = None) -> None:
    """A distributed cron scheduler on an embedded, Raft-replicated, etcd-compatible store."""
    CLIENT_TLS.cacert, CLIENT_TLS.cert, CLIENT_TLS.key = cacert, cert, key
    CLIENT_TLS.insecure_skip_verify = insecure_skip_tls_verify
    CLIENT_AUTH.user, CLIENT_AUTH.password = user, password
    CLIENT_AUTH.password_file = password_file


jobs_app = typer.Typer(help="Inspect and control jobs.", no_args_is_help=True,
                       rich_markup_mode=None)
app.add_typer(jobs_app, name="jobs")
cluster_app = typer.Typer(help="Inspect the coord cluster (members, leader, raft state).",
                          no_args_is_help=True, rich_markup_mode=None)
app.add_typer(cluster_app, name="cluster")


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


EndpointsOpt = Annotated[str, typer.Option(
    "--endpoints", envvar="RAFTCRON_ENDPOINTS",
    help="Comma-separated HOST:PORT of coord members or etcd servers.")]
OutputOpt = Annotated[str, typer.Option("-o", "--output", help="table or json.")]
TagsOpt = Annotated[str, typer.Option("--tags", help="k=v,... this worker offers to jobs.")]


def parse_tags(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, sep, v = part.partition("=")
        if not sep or not k:
            fail(f"--tags: expected k=v,..., got {part!r}", 2)
        tags[k] = v
    return tags


def check_output(output: str) -> None:
    if output not in ("table", "json"):
        fail(f"-o must be table or json, not {output!r}", 2)


def check_limit(limit: int) -> None:
    if limit < 1:
        fail(f"--limit must be at least 1, not {limit}", 2)


def client_call(endpoints: str, fn: Any) -> Any:
    """Run ``fn(client)`` against the endpoints; store errors become a clear exit 1."""
    from coord.client import Client, ClientError
    from scheduler.admin import AdminError
    from scheduler.cliviews import refused
    from scheduler.errors import SpecError
    from scheduler.spec import gc_paused

    tls = client_tls()
    auth = client_auth()
    why = refused(endpoints)
    if why is not None:  # nothing listens: say so now, not after the client's retries
        fail(f"cannot reach the store at {endpoints}: {why}")

    async def body() -> Any:
        from scheduler.audit import AuditedClient, Identity

        async with Client(endpoints, timeout=5, tls=tls, auth=auth) as client:
            # Writes of job definitions, triggers, kills and suspensions carry their
            # audit record (scheduler.audit); reads go through untouched.
            audited = AuditedClient(client, Identity.of(
                auth.user if auth else cert_cn(CLIENT_TLS.cert)))
            result = await fn(audited)
            if audited.wrote:
                with contextlib.suppress(ClientError):
                    # The action is done; the next audited write bounds the trail.
                    await audited.bound()
            return result
    try:
        with gc_paused():  # a short-lived process decoding thousands of values (jobs list)
            return asyncio.run(body())
    except AdminError as err:
        fail(str(err))
    except SpecError as err:
        fail(str(err), 2)
    except ClientError as err:
        from scheduler.cli_errors import client_failure

        fail(client_failure(endpoints, err))
