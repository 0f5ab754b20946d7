"""The TLS flags of the commands, with etcd's and etcdctl's names and meanings so that an
etcd operator needs nothing new (docs/security.md): the server side for ``coord serve`` and
``agent``, the client side for every command that reaches a store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

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
InsecureListenOpt = Annotated[bool, typer.Option(
    "--insecure-listen", help="Allow plaintext listeners on addresses other hosts can reach "
    "(refused by default; logs a warning at every start).")]


PeerCertFileOpt = Annotated[Path | None, typer.Option(
    "--peer-cert-file", help="Certificate of the peer port (PEM), also presented when this "
    "member dials its peers; with --peer-key-file: peers speak TLS.")]
PeerKeyFileOpt = Annotated[Path | None, typer.Option(
    "--peer-key-file", help="Private key of --peer-cert-file (PEM).")]
PeerTrustedCAOpt = Annotated[Path | None, typer.Option(
    "--peer-trusted-ca-file", help="CA bundle peer certificates are verified against "
    "(both ways).")]
PeerClientCertAuthOpt = Annotated[bool, typer.Option(
    "--peer-client-cert-auth", help="Require a peer certificate signed by "
    "--peer-trusted-ca-file on the peer port.")]
PeerAllowedCNOpt = Annotated[str, typer.Option(
    "--peer-cert-allowed-cn", help="Accept only peer certificates with this common name.")]


@dataclass(frozen=True)
class ServerTLSFlags:
    """A member's TLS flags as given, client port, peer port and --insecure-listen
    (checked when the member's config is made)."""

    cert_file: Path | None = None
    key_file: Path | None = None
    trusted_ca_file: Path | None = None
    client_cert_auth: bool = False
    min_version: str = DEFAULT_MIN_VERSION
    insecure_listen: bool = False
    peer_cert_file: Path | None = None
    peer_key_file: Path | None = None
    peer_trusted_ca_file: Path | None = None
    peer_client_cert_auth: bool = False
    peer_allowed_cn: str = ""


# The client side: etcdctl's global flags, given before the command
# (``raftcron --cacert ca.pem jobs list --endpoints https://h:2379``), or from the environment.
CACertOpt = Annotated[Path | None, typer.Option(
    "--cacert", envvar="RAFTCRON_CACERT",
    help="Verify the stores' certificates with this CA bundle (TLS; implied by https://).")]
CertOpt = Annotated[Path | None, typer.Option(
    "--cert", envvar="RAFTCRON_CERT", help="Client certificate (for --client-cert-auth).")]
KeyOpt = Annotated[Path | None, typer.Option(
    "--key", envvar="RAFTCRON_KEY", help="Private key of --cert.")]
SkipVerifyOpt = Annotated[bool, typer.Option(
    "--insecure-skip-tls-verify",
    help="TLS without verifying the server's certificate (testing only).")]


@dataclass
class ClientTLSFlags:
    """The global client TLS flags, set by the root command before any command runs."""

    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure_skip_verify: bool = False

    def given(self) -> bool:
        return bool(self.cacert or self.cert or self.key or self.insecure_skip_verify)


CLIENT_TLS = ClientTLSFlags()
"""What this process's client commands (and worker) use to reach the store."""


def client_tls() -> Any:
    """The coord client's :class:`coord.client.ClientTLS` from the flags, or None (then
    ``https://`` endpoints still use TLS, with the system's CAs)."""
    flags = CLIENT_TLS
    if not flags.given():
        return None
    if (flags.cert is None) != (flags.key is None):
        _bad_flag("--cert and --key go together")
    for flag, path in (("--cacert", flags.cacert), ("--cert", flags.cert),
                       ("--key", flags.key)):
        if path is not None and not path.is_file():
            _bad_flag(f"{flag}: no such file: {path}")
    from coord.client import ClientTLS

    return ClientTLS(flags.cacert, flags.cert, flags.key, flags.insecure_skip_verify)


def _bad_flag(message: str) -> None:
    """As ``scheduler.cli_app.fail(message, 2)`` (which imports this module)."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(2)


# The identity flags, etcdctl's (--user, --password), global like the TLS ones; a client
# certificate (--cert/--key) is the other way to name the user.
UserOpt = Annotated[str | None, typer.Option(
    "--user", envvar="RAFTCRON_USER",
    help="NAME[:PASSWORD] to log in as, on a store with auth enabled.")]
PasswordOpt = Annotated[str | None, typer.Option(
    "--password", envvar="RAFTCRON_PASSWORD", show_envvar=False,
    help="The password of --user (or give it in --user NAME:PASSWORD or --password-file).")]
PasswordFileOpt = Annotated[Path | None, typer.Option(
    "--password-file", envvar="RAFTCRON_PASSWORD_FILE",
    help="A file whose first line is the password of --user.")]


@dataclass
class ClientAuthFlags:
    """The global identity flags, set by the root command before any command runs."""

    user: str | None = None
    password: str | None = None
    password_file: Path | None = None


CLIENT_AUTH = ClientAuthFlags()


def client_auth() -> Any:
    """The coord client's :class:`coord.client.ClientAuth` from the flags, or None. The
    password is never echoed in an error."""
    flags = CLIENT_AUTH
    if flags.user is None:
        if flags.password is not None or flags.password_file is not None:
            _bad_flag("--password and --password-file need --user")
        return None
    name, sep, password = flags.user.partition(":")
    if not name:
        _bad_flag("--user: expected NAME[:PASSWORD], the name is empty")
    given = [p for p in (password if sep else None, flags.password) if p is not None]
    if flags.password_file is not None:
        try:
            lines = flags.password_file.read_text().splitlines()
        except OSError as err:
            _bad_flag(f"--password-file: cannot read {flags.password_file}: {err.strerror}")
        given.append(lines[0] if lines else "")
    if len(given) > 1:
        _bad_flag("give the password of --user once: NAME:PASSWORD, --password or "
                  "--password-file")
    if not given:
        import sys

        if not sys.stdin.isatty():
            _bad_flag(f"--user {name}: no password (NAME:PASSWORD, --password or "
                      "--password-file)")
        import getpass

        given.append(getpass.getpass("Password: "))
    from coord.client import ClientAuth

    return ClientAuth(name, given[0])


def cert_cn(path: Path | None) -> str | None:
    """``cn=<common name>`` of the client certificate at ``path`` (the user a store with
    --client-cert-auth sees), or None."""
    if path is None:
        return None
    try:
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"cn={names[0].value!s}" if names else None


def handshake_hint(endpoints: str, message: str) -> str:
    """What to add to a "cannot reach the store" line when a TLS connection was closed by
    the server in the handshake: gRPC then reports only ``Socket closed`` (or
    ``Connection reset by peer`` when the server's reset overtakes its TLS alert), whether
    the server refused this client's certificate (as a member with ``--client-cert-auth``
    does) or does not speak TLS at all. '' otherwise."""
    closed = "Socket closed" in message or "Connection reset by peer" in message
    if not closed or not (CLIENT_TLS.given() or "https://" in endpoints):
        return ""
    return ("; the server closed the connection in the TLS handshake: either it refused this "
            "client's certificate (--cert, --key): none, expired, or not signed by a CA it "
            "trusts; or it does not serve TLS on that port")
