"""``raftcron certs init|member|client``: a CA and the keys and certificates a secure
cluster needs, in the layout the TLS flags take (scheduler/certs.py; docs/security.md
"Certificates")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.cli_app import app, fail

certs_app = typer.Typer(
    help="Make a CA and the keys and certificates of members and clients "
    "(for the TLS flags; files under --dir, default ./certs).",
    no_args_is_help=True, rich_markup_mode=None)
app.add_typer(certs_app, name="certs")

DirOpt = Annotated[Path, typer.Option(
    "--dir", help="Directory of the CA and the certificates (created 0700).")]
KeyTypeOpt = Annotated[str, typer.Option(
    "--key-type", help="ecdsa (P-256) or rsa (2048 bits).")]
ForceOpt = Annotated[bool, typer.Option(
    "--force", help="Replace files that exist (refused otherwise).")]
DEFAULT_DIR = Path("certs")
DEFAULT_KEY_TYPE = "ecdsa"


def _run(make: Callable[[], Any]) -> Any:
    from scheduler.certs import CertsError

    try:
        return make()
    except CertsError as err:
        fail(str(err), 2)
    except OSError as err:
        fail(f"cannot write the files: {err}", 1)


def _report(paths: Any, what: str) -> None:
    typer.echo(f"wrote {paths.cert} ({what})")
    typer.echo(f"wrote {paths.key} (its private key, mode 0600)")


@certs_app.command("init")
def certs_init(
    directory: DirOpt = DEFAULT_DIR,
    days: Annotated[int, typer.Option("--days", help="Days the CA is valid.")] = 1825,
    key_type: KeyTypeOpt = DEFAULT_KEY_TYPE,
    common_name: Annotated[str, typer.Option(
        "--common-name", help="The CA's name.", show_default="raftcron CA <random>")] = "",
    force: ForceOpt = False,
) -> None:
    """Make a CA: DIR/ca.pem (give it to every member and client: --trusted-ca-file,
    --peer-trusted-ca-file, --cacert) and DIR/ca-key.pem (keep it where certificates are
    made, nowhere else).

    Example:  raftcron certs init --dir certs
    """
    from scheduler import certs

    paths = _run(lambda: certs.init_ca(directory, days=days, key_type=key_type,
                                       common_name=common_name, force=force))
    _report(paths, f"a CA valid for {days} days")


@certs_app.command("member")
def certs_member(
    name: Annotated[str, typer.Argument(help="The member's --name (the certificate's CN).")],
    hosts: Annotated[list[str] | None, typer.Option(
        "--host", metavar="HOST", help="An IP address or DNS name the member is reached at (its "
        "--listen-client/--listen-peer and --initial-cluster host); repeat for more.",
        show_default="none: give at least one")] = None,
    directory: DirOpt = DEFAULT_DIR,
    days: Annotated[int, typer.Option("--days", help="Days the certificate is valid.")] = 365,
    key_type: KeyTypeOpt = DEFAULT_KEY_TYPE,
    force: ForceOpt = False,
) -> None:
    """Make a member's key and certificate, signed by the CA in DIR: a server and client
    certificate for its client and peer ports (--cert-file/--key-file and
    --peer-cert-file/--peer-key-file), valid for each --host.

    Example:  raftcron certs member n1 --host 10.0.0.1 --host n1.example.com
    """
    from scheduler import certs

    given = hosts or []
    paths = _run(lambda: certs.issue_member(directory, name, given, days=days,
                                            key_type=key_type, force=force))
    _report(paths, f"member {name}, for {', '.join(given)}, valid for {days} days")


@certs_app.command("client")
def certs_client(
    name: Annotated[str, typer.Argument(help="The client's name (the certificate's CN).")],
    directory: DirOpt = DEFAULT_DIR,
    days: Annotated[int, typer.Option("--days", help="Days the certificate is valid.")] = 365,
    key_type: KeyTypeOpt = DEFAULT_KEY_TYPE,
    force: ForceOpt = False,
) -> None:
    """Make a client's key and certificate, signed by the CA in DIR, for etcdctl and
    raftcron's commands and workers (--cert/--key) against members with --client-cert-auth.

    Example:  raftcron certs client admin
    """
    from scheduler import certs

    paths = _run(lambda: certs.issue_client(directory, name, days=days, key_type=key_type,
                                            force=force))
    _report(paths, f"client {name}, valid for {days} days")
