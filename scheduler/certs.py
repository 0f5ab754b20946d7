"""Keys and certificates for a raftcron cluster (``raftcron certs``), made with
``cryptography``: a CA, member certificates (server and client, for the client and peer
ports) and client certificates, in one directory laid out as the TLS flags take them.

Layout under the directory (default ``./certs``)::

    ca.pem               ca-key.pem                the CA (self-signed)
    member-NAME.pem      member-NAME-key.pem       a member: server + client, SAN per host
    client-NAME.pem      client-NAME-key.pem       a client: CN=NAME, client only

Keys are written 0600, the directory is created 0700, and no file is ever replaced unless
asked (``force``). Certificates are ECDSA P-256 (or RSA 2048) signed with SHA-256.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
KEY_TYPES = ("ecdsa", "rsa")
DEFAULT_DIR = Path("certs")
CA_DAYS = 1825
"""Default validity of a CA (five years, as ``consul tls ca create``)."""
CERT_DAYS = 365
"""Default validity of a member or client certificate (one year)."""
BACKDATE = datetime.timedelta(minutes=5)
"""Certificates start this long before they are made, for clocks a little behind."""


class CertsError(Exception):
    """A request ``raftcron certs`` refuses (bad input: exit 2), with the one line to print."""


@dataclass(frozen=True)
class Written:
    """The files one command wrote."""

    cert: Path
    key: Path


def ca_paths(directory: Path) -> Written:
    return Written(directory / "ca.pem", directory / "ca-key.pem")


def member_paths(directory: Path, name: str) -> Written:
    return Written(directory / f"member-{name}.pem", directory / f"member-{name}-key.pem")


def client_paths(directory: Path, name: str) -> Written:
    return Written(directory / f"client-{name}.pem", directory / f"client-{name}-key.pem")


def new_key(key_type: str) -> PrivateKey:
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise CertsError(f"--key-type: {key_type!r} is not one of {', '.join(KEY_TYPES)}")


def _check_days(days: int) -> None:
    if days < 1:
        raise CertsError(f"--days: must be 1 or more, got {days}")


def _check_name(kind: str, name: str) -> None:
    """A name becomes part of a file name and a certificate's CN."""
    ok = name and all(ch.isalnum() or ch in "-_." for ch in name) and not name.startswith(".")
    if not ok:
        raise CertsError(f"{kind} name {name!r}: use letters, digits, '-', '_' and '.' only")


def _refuse_existing(paths: Written, force: bool) -> None:
    if force:
        return
    for path in (paths.cert, paths.key):
        if path.exists():
            raise CertsError(f"{path} already exists; not overwriting it (--force replaces it)")


def init_ca(directory: Path, *, days: int = CA_DAYS, key_type: str = "ecdsa",
            common_name: str = "", force: bool = False) -> Written:
    """Make a CA: a key and a self-signed certificate that may sign others (not CAs)."""
    _check_days(days)
    paths = ca_paths(directory)
    _refuse_existing(paths, force)
    key = new_key(key_type)
    # A random suffix tells two CAs apart by name too (as consul's CAs are).
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "raftcron"),
        x509.NameAttribute(NameOID.COMMON_NAME,
                           common_name or f"raftcron CA {secrets.token_hex(4)}")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(key, hashes.SHA256()))
    _write(directory, paths, cert, key)
    return paths


def load_ca(directory: Path) -> tuple[x509.Certificate, PrivateKey]:
    """The CA ``init_ca`` wrote in ``directory``."""
    paths = ca_paths(directory)
    missing = [p for p in (paths.cert, paths.key) if not p.is_file()]
    if missing:
        raise CertsError(f"no CA in {directory}: {missing[0]} is missing (run `raftcron certs "
                         f"init --dir {directory}` first, or give --dir where the CA is)")
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise CertsError(f"cannot read the CA in {directory}: {err}") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertsError(f"{paths.key}: not an ECDSA or RSA key")
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise CertsError(f"{paths.key} is not the key of {paths.cert}")
    return cert, key


def issue_member(directory: Path, name: str, hosts: list[str], *, days: int = CERT_DAYS,
                 key_type: str = "ecdsa", force: bool = False) -> Written:
    """A member's certificate: CN=name, a SAN for each host (IP or DNS name), usable as
    server and client (its client and peer ports, and dialing its peers)."""
    _check_name("member", name)
    if not hosts:
        raise CertsError("certs member needs at least one --host (the member's IP address "
                         "or DNS name, as its peers and clients reach it)")
    sans = [_san(h) for h in hosts]
    return _issue(directory, member_paths(directory, name), name, sans,
                  [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                  days, key_type, force)


def issue_client(directory: Path, name: str, *, days: int = CERT_DAYS,
                 key_type: str = "ecdsa", force: bool = False) -> Written:
    """A client's certificate: CN=name (the user name once auth is on), client only."""
    _check_name("client", name)
    return _issue(directory, client_paths(directory, name), name, [],
                  [ExtendedKeyUsageOID.CLIENT_AUTH], days, key_type, force)


def _issue(directory: Path, paths: Written, name: str, sans: list[x509.GeneralName],
           usages: list[x509.ObjectIdentifier], days: int, key_type: str,
           force: bool) -> Written:
    _check_days(days)
    ca_cert, ca_key = load_ca(directory)
    _refuse_existing(paths, force)
    now = datetime.datetime.now(datetime.UTC)
    end = now + datetime.timedelta(days=days)
    if end > ca_cert.not_valid_after_utc:
        raise CertsError(f"--days {days}: the certificate would outlive the CA, which expires "
                         f"{ca_cert.not_valid_after_utc:%Y-%m-%d}; give fewer days")
    key = new_key(key_type)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([
                   x509.NameAttribute(NameOID.ORGANIZATION_NAME, "raftcron"),
                   x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - BACKDATE).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_key_usage(rsa_key=key_type == "rsa"), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    _write(directory, paths, builder.sign(ca_key, hashes.SHA256()), key)
    return paths


def _spki(public_key: Any) -> bytes:
    return bytes(public_key.public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo))


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if not host or not all(lb and all(ch.isalnum() or ch == "-" for ch in lb.removeprefix("*"))
                           for lb in labels):
        raise CertsError(f"--host {host!r}: not an IP address or a DNS name")
    return x509.DNSName(host)


def _key_usage(*, cert_sign: bool = False, rsa_key: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=rsa_key, data_encipherment=False,
                         key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         encipher_only=False, decipher_only=False)


def _write(directory: Path, paths: Written, cert: x509.Certificate, key: PrivateKey) -> None:
    """Write the key (0600) and the certificate (0644), each to a temporary file first, so
    a failure leaves either the old file or the new one, never half of one."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _replace(paths.key, key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()), 0o600)
    _replace(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _replace(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # whatever the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
