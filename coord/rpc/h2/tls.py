"""TLS for coord's HTTP/2 listeners and dialers: the settings (etcd's flags) and the
``ssl.SSLContext`` made from them. asyncio does the TLS itself (``create_server(ssl=...)``,
``create_connection(ssl=...)``); the HTTP/2 connection above it is the same as in plaintext.

ALPN offers only ``h2``: gRPC clients (grpc-go in etcdctl, grpcio) require it over TLS.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

TLS_VERSIONS = {"TLS1.2": ssl.TLSVersion.TLSv1_2, "TLS1.3": ssl.TLSVersion.TLSv1_3}
"""``--tls-min-version`` values (etcd's spelling) → the ssl module's."""

DEFAULT_MIN_VERSION = "TLS1.2"


class TLSConfigError(ValueError):
    """TLS flags that cannot work together; the message names the flags."""


@dataclass(frozen=True)
class ServerTLS:
    """One listener's TLS, as etcd's flags give it (``--cert-file`` etc., or their
    ``--peer-`` forms for the peer port); ``prefix`` is that flag prefix, for messages."""

    cert_file: Path
    key_file: Path
    trusted_ca_file: Path | None = None
    client_cert_auth: bool = False
    min_version: str = DEFAULT_MIN_VERSION
    allowed_cn: str = ""
    """Peer port only (``--peer-cert-allowed-cn``): a client certificate must carry this
    common name; empty: any certificate the CA signed."""


def check_min_version(value: str) -> str:
    if value not in TLS_VERSIONS:
        raise TLSConfigError(
            f"--tls-min-version: expected one of {', '.join(TLS_VERSIONS)}, got {value!r}")
    return value


def server_tls(prefix: str, cert_file: Path | None, key_file: Path | None,
               trusted_ca_file: Path | None, client_cert_auth: bool, min_version: str,
               allowed_cn: str = "") -> ServerTLS | None:
    """The listener's TLS from its flags (``prefix`` is ``--`` or ``--peer-``), None for
    plaintext; raises :class:`TLSConfigError` on a combination that cannot work."""
    check_min_version(min_version)
    if cert_file is None and key_file is None:
        if client_cert_auth or trusted_ca_file is not None or allowed_cn:
            raise TLSConfigError(
                f"{prefix}client-cert-auth, {prefix}trusted-ca-file and "
                f"{prefix}cert-allowed-cn need {prefix}cert-file and {prefix}key-file")
        return None
    if cert_file is None or key_file is None:
        raise TLSConfigError(f"{prefix}cert-file and {prefix}key-file go together")
    if client_cert_auth and trusted_ca_file is None:
        raise TLSConfigError(
            f"{prefix}client-cert-auth needs {prefix}trusted-ca-file (the CA that signs "
            "the clients' certificates)")
    for flag, path in ((f"{prefix}cert-file", cert_file), (f"{prefix}key-file", key_file),
                       (f"{prefix}trusted-ca-file", trusted_ca_file)):
        if path is not None and not path.is_file():
            raise TLSConfigError(f"{flag}: no such file: {path}")
    tls = ServerTLS(cert_file, key_file, trusted_ca_file, client_cert_auth, min_version,
                    allowed_cn)
    try:
        server_context(tls)  # a key that does not match, a file that is not PEM: say so now
    except ssl.SSLError as err:
        raise TLSConfigError(
            f"{prefix}cert-file {cert_file}, {prefix}key-file {key_file}"
            f"{f', {prefix}trusted-ca-file {trusted_ca_file}' if trusted_ca_file else ''}: "
            f"cannot be loaded ({err.reason or err})") from None
    return tls


def server_context(tls: ServerTLS) -> ssl.SSLContext:
    """The listener's context: its certificate, ALPN ``h2``, the minimum version, and with
    ``client_cert_auth`` a client certificate signed by ``trusted_ca_file`` required.
    Raises ``ssl.SSLError``/``OSError`` on an unreadable or mismatched key pair."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    ctx.set_alpn_protocols(["h2"])
    if tls.trusted_ca_file is not None:
        ctx.load_verify_locations(cafile=tls.trusted_ca_file)
        # etcd verifies a certificate a client offers when it has a CA, and requires one
        # only with --client-cert-auth.
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.client_cert_auth else ssl.CERT_OPTIONAL
    return ctx


def client_context(cacert: Path | None = None, cert: Path | None = None,
                   key: Path | None = None, insecure_skip_verify: bool = False,
                   min_version: str = DEFAULT_MIN_VERSION) -> ssl.SSLContext:
    """A dialer's context (etcdctl's ``--cacert``/``--cert``/``--key``/
    ``--insecure-skip-tls-verify``): the server verified against ``cacert`` (the system's
    CAs without it) unless told to skip, ALPN ``h2``, a client certificate if given."""
    ctx = ssl.create_default_context(cafile=str(cacert) if cacert is not None else None)
    ctx.minimum_version = TLS_VERSIONS[check_min_version(min_version)]
    ctx.set_alpn_protocols(["h2"])
    if insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def common_name(peercert: dict[str, object] | None) -> str:
    """The subject CN of a verified peer certificate (``SSLObject.getpeercert()``), or ''."""
    if not peercert:
        return ""
    for rdn in peercert.get("subject", ()):  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""
