"""TLS for coord's HTTP/2 listeners and dialers: the settings (etcd's flags) and the
``ssl.SSLContext`` made from them. asyncio does the TLS itself (``create_server(ssl=...)``,
``create_connection(ssl=...)``); the HTTP/2 connection above it is the same as in plaintext.

ALPN offers only ``h2``: gRPC clients (grpc-go in etcdctl, grpcio) require it over TLS.

Reload: a listener's context is made once, but every handshake switches to the newest
context of its :class:`ServerTLS` (``sni_callback``, which OpenSSL calls for every
ClientHello, with or without a server name), so :func:`reload_server` — on SIGHUP or when
the files change — makes new handshakes use new files while connections made before go on.
A reload that cannot load the files keeps the context it had.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger("coord.tls")

TLS_VERSIONS = {"TLS1.2": ssl.TLSVersion.TLSv1_2, "TLS1.3": ssl.TLSVersion.TLSv1_3}
"""``--tls-min-version`` values (etcd's spelling) → the ssl module's."""

DEFAULT_MIN_VERSION = "TLS1.2"


class TLSConfigError(ValueError):
    """TLS flags that cannot work together; the message names the flags."""


class LiveContext:
    """The context a listener's new handshakes use (swapped by :func:`reload_server`), and
    the state of the files it was made from."""

    def __init__(self) -> None:
        self.current: ssl.SSLContext | None = None
        self.stamp: tuple[object, ...] = ()
        """:func:`files_stamp` of the files ``current`` was made from (or last failed to
        load: a broken set is reported once, not at every poll)."""

    def select(self, obj: ssl.SSLObject, server_name: str | None,
               ctx: ssl.SSLContext) -> None:
        """``sni_callback``: the handshake goes on with the newest context."""
        current = self.current
        if current is not None and obj.context is not current:
            obj.context = current


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
    own_cn: str = ""
    """Peer port whose peers check identity (a CA, no allowed CN): the common name this
    member's own certificate must carry, its name (``coord.server.transport_identity``);
    a certificate with another is refused at start and at reload. Empty: not checked."""
    live: LiveContext = field(default_factory=LiveContext, compare=False, hash=False,
                              repr=False)
    """The context new handshakes use (see the module's docstring)."""

    def files(self) -> tuple[Path, ...]:
        """The files this listener's TLS is made from."""
        return tuple(p for p in (self.cert_file, self.key_file, self.trusted_ca_file)
                     if p is not None)


def files_stamp(paths: tuple[Path, ...]) -> tuple[object, ...]:
    """What tells a changed file from the one read before: inode, size and modification
    time of each path (None for a file that is missing now)."""
    out: list[object] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def check_min_version(value: str) -> str:
    if value not in TLS_VERSIONS:
        raise TLSConfigError(
            f"--tls-min-version: expected one of {', '.join(TLS_VERSIONS)}, got {value!r}")
    return value


def server_tls(prefix: str, cert_file: Path | None, key_file: Path | None,
               trusted_ca_file: Path | None, client_cert_auth: bool, min_version: str,
               allowed_cn: str = "", member_name: str = "") -> ServerTLS | None:
    """The listener's TLS from its flags (``prefix`` is ``--`` or ``--peer-``), None for
    plaintext; raises :class:`TLSConfigError` on a combination that cannot work. For the
    peer port, ``member_name`` is the member's name, which its certificate must carry
    when its peers check identity (a CA and no ``allowed_cn``)."""
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
    own_cn = member_name if trusted_ca_file is not None and not allowed_cn else ""
    tls = ServerTLS(cert_file, key_file, trusted_ca_file, client_cert_auth, min_version,
                    allowed_cn, own_cn)
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
    ``client_cert_auth`` a client certificate signed by ``trusted_ca_file`` required; each
    handshake switches to the newest context of ``tls.live``. Raises ``ssl.SSLError``/
    ``OSError`` on an unreadable or mismatched key pair."""
    stamp = files_stamp(tls.files())
    ctx = build_server_context(tls)
    ctx.sni_callback = tls.live.select
    tls.live.current, tls.live.stamp = ctx, stamp
    return ctx


def reload_server(tls: ServerTLS, trigger: str, port: str) -> bool:
    """Load ``tls``'s files again for the handshakes to come; False (and one
    ``tls.reload_failed`` error, the old context kept) if they cannot be loaded. ``trigger``
    and ``port`` (``client``/``peer``) are for the log."""
    stamp = files_stamp(tls.files())
    try:
        ctx = build_server_context(tls)
    except (ssl.SSLError, OSError, TLSConfigError) as err:
        if stamp != tls.live.stamp or trigger == "SIGHUP":
            log.error("tls.reload_failed", port=port, trigger=trigger,
                      cert_file=str(tls.cert_file), key_file=str(tls.key_file),
                      error=getattr(err, "reason", None) or str(err),
                      hint="the certificate in use is kept; fix the files (a key that "
                      "matches the certificate, PEM) and send SIGHUP or write them again")
        tls.live.stamp = stamp
        return False
    ctx.sni_callback = tls.live.select
    tls.live.current, tls.live.stamp = ctx, stamp
    log.info("tls.reloaded", port=port, trigger=trigger, cert_file=str(tls.cert_file))
    return True


def build_server_context(tls: ServerTLS) -> ssl.SSLContext:
    """A new context from ``tls``'s files (see :func:`server_context`)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.own_cn:
        cn = certificate_cn(tls.cert_file)
        if cn != tls.own_cn:
            raise TLSConfigError(
                f"--peer-cert-file {tls.cert_file}: its common name is {cn!r}, not this "
                f"member's name {tls.own_cn!r}, so its peers would refuse it (they check "
                "that a member's certificate names it: docs/security.md, \"Peer identity\"). "
                f"Use a certificate made for it (raftcron certs member {tls.own_cn} --host "
                "...), or give every member's certificate one common name and pass it as "
                "--peer-cert-allowed-cn")
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


def certificate_cn(path: Path) -> str:
    """The subject common name of the first certificate in PEM file ``path`` ('' if it
    has none); raises TLSConfigError if it cannot be read."""
    from cryptography import x509  # noqa: PLC0415 - only a peer port checking names needs it
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as err:
        raise TLSConfigError(f"--peer-cert-file {path}: cannot be read ({err})") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value.decode() if isinstance(value, bytes) else str(value)


AuthContext = dict[str, list[bytes]]
"""A call's view of its connection's verified client certificate, in grpc's
``ServicerContext.auth_context()`` form: ``x509_common_name``,
``x509_subject_alternative_name`` (DNS names and IP addresses), ``transport_security_type``.
Empty for a plaintext connection or one whose client presented no certificate."""


def auth_context(peercert: dict[str, object] | None) -> AuthContext:
    """The :data:`AuthContext` of a connection whose verified client certificate is
    ``peercert`` (``getpeercert()``: empty when none was verified)."""
    if not peercert:
        return {}
    sans = [str(value).encode() for kind, value in
            peercert.get("subjectAltName", ())  # type: ignore[attr-defined]
            if kind in ("DNS", "IP Address")]
    return {"transport_security_type": [b"ssl"],
            "x509_common_name": [common_name(peercert).encode()],
            "x509_subject_alternative_name": sans}
