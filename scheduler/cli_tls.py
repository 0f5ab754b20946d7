"""The TLS flags of the commands, with etcd's and etcdctl's names and meanings so that an
etcd operator needs nothing new (docs/security.md): the server side for ``coord serve`` and
``agent``, the client side for every command that reaches a store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

CertFileOpt = Annotated[Path | None, typer.Option(
    "--cert-file", help="Certificate of the client port (PEM); with --key-file: serve TLS.")]
KeyFileOpt = Annotated[Path | None, typer.Option(
    "--key-file", help="Private key of --cert-file (PEM).")]
TrustedCAOpt = Annotated[Path | None, typer.Option(
    "--trusted-ca-file", help="CA bundle client certificates are verified against.")]
ClientCertAuthOpt = Annotated[bool, typer.Option(
    "--client-cert-auth", help="Require a client certificate signed by --trusted-ca-file.")]
MinVersionOpt = Annotated[str, typer.Option(
    "--tls-min-version", help="Lowest TLS version accepted: TLS1.2 or TLS1.3.")]
DEFAULT_MIN_VERSION = "TLS1.2"


@dataclass(frozen=True)
class ServerTLSFlags:
    """A listener's TLS flags as given (checked when the member's config is made)."""

    cert_file: Path | None = None
    key_file: Path | None = None
    trusted_ca_file: Path | None = None
    client_cert_auth: bool = False
    min_version: str = DEFAULT_MIN_VERSION
