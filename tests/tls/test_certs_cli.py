"""`raftcron certs init|member|client` as a user runs them (``python -m scheduler.cli``):
the files and their modes, certificates that verify against the CA with the right CN,
SANs and usages (checked with cryptography's RFC 5280 verifier), refusal to overwrite
without --force, clear one-line errors (no CA, bad input), and a member serving with its
certificate: etcdctl with a client certificate of the same CA gets in, one from another
`certs init` does not."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from tests.helpers.binaries import require_binary
from tests.helpers.procs import (
    REPO,
    ProcessGroup,
    coord_argv,
    free_port,
    port_open,
    wait_until,
)

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def certs(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler.cli", "certs", *args], cwd=cwd,
                          env=ENV, capture_output=True, text=True, timeout=60, check=False)


def ok(cwd: Path, *args: str) -> str:
    r = certs(cwd, *args)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


def refused(cwd: Path, *args: str, code: int = 2) -> str:
    """The command fails with ``code`` and one ``Error:`` line; returns that line."""
    r = certs(cwd, *args)
    assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("Error: ") and len(r.stderr.splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    return r.stderr


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def server_ok(ca: x509.Certificate, leaf: x509.Certificate, name: x509.GeneralName) -> bool:
    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(name)  # type: ignore[arg-type]
    try:
        verifier.verify(leaf, [])
    except VerificationError:
        return False
    return True


def client_ok(ca: x509.Certificate, leaf: x509.Certificate) -> bool:
    # The Web PKI policy wants a SAN in every client certificate; TLS servers (OpenSSL's,
    # Go's) do not, and a client certificate's identity is its CN.
    leaf_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    builder = PolicyBuilder().store(Store([ca])).extension_policies(
        ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=leaf_policy)
    try:
        builder.build_client_verifier().verify(leaf, [])
    except VerificationError:
        return False
    return True


def cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def days_left(cert: x509.Certificate) -> float:
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return left.total_seconds() / 86400


def test_help_of_each_subcommand(tmp_path: Path) -> None:
    assert "init" in ok(tmp_path, "--help") and "client" in ok(tmp_path, "--help")
    for sub, flag in (("init", "--days"), ("member", "--host"), ("client", "--key-type")):
        out = ok(tmp_path, sub, "--help")
        assert "Example:" in out and flag in out and "--force" in out, out


def test_init_member_client_make_certificates_that_verify(tmp_path: Path) -> None:
    ok(tmp_path, "init")
    out = ok(tmp_path, "member", "n1", "--host", "127.0.0.1", "--host", "node1.example.com")
    assert "certs/member-n1.pem" in out and "certs/member-n1-key.pem" in out, out
    ok(tmp_path, "client", "admin")
    d = tmp_path / "certs"
    assert sorted(p.name for p in d.iterdir()) == [
        "ca-key.pem", "ca.pem", "client-admin-key.pem", "client-admin.pem",
        "member-n1-key.pem", "member-n1.pem"]
    assert mode(d) == 0o700
    for name in ("ca", "member-n1", "client-admin"):
        assert mode(d / f"{name}-key.pem") == 0o600
        assert mode(d / f"{name}.pem") == 0o644

    ca = load(d / "ca.pem")
    assert ca.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert 1824 < days_left(ca) <= 1825

    member = load(d / "member-n1.pem")
    assert cn(member) == "n1" and member.issuer == ca.subject
    assert 364 < days_left(member) <= 365
    sans = member.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["node1.example.com"]
    assert server_ok(ca, member, x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    assert server_ok(ca, member, x509.DNSName("node1.example.com"))
    assert not server_ok(ca, member, x509.DNSName("node2.example.com"))
    assert client_ok(ca, member)  # members dial their peers with it

    client = load(d / "client-admin.pem")
    assert cn(client) == "admin" and client.issuer == ca.subject
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert client_ok(ca, client)
    assert not server_ok(ca, client, x509.DNSName("admin"))

    # A certificate of another CA does not verify against this one.
    other = tmp_path / "other"
    ok(tmp_path, "init", "--dir", str(other))
    ok(tmp_path, "client", "admin", "--dir", str(other))
    assert load(other / "ca.pem").subject != ca.subject
    assert not client_ok(ca, load(other / "client-admin.pem"))


def test_days_key_type_and_dir(tmp_path: Path) -> None:
    ok(tmp_path, "init", "--dir", "pki", "--days", "30", "--key-type", "rsa",
       "--common-name", "Example CA")
    ok(tmp_path, "member", "m-1", "--dir", "pki", "--host", "10.1.2.3", "--days", "7",
       "--key-type", "rsa")
    ok(tmp_path, "client", "bob", "--dir", "pki", "--days", "2")
    d = tmp_path / "pki"
    ca, member, client = load(d / "ca.pem"), load(d / "member-m-1.pem"), load(d / "client-bob.pem")
    assert cn(ca) == "Example CA" and 29 < days_left(ca) <= 30
    assert isinstance(ca.public_key(), rsa.RSAPublicKey) and ca.public_key().key_size == 2048
    assert isinstance(member.public_key(), rsa.RSAPublicKey)
    assert isinstance(client.public_key(), ec.EllipticCurvePublicKey)  # the default
    assert 6 < days_left(member) <= 7 and 1 < days_left(client) <= 2
    assert server_ok(ca, member, x509.IPAddress(ipaddress.ip_address("10.1.2.3")))
    assert client_ok(ca, client)


def test_nothing_is_overwritten_without_force(tmp_path: Path) -> None:
    ok(tmp_path, "init")
    ok(tmp_path, "member", "n1", "--host", "127.0.0.1")
    ok(tmp_path, "client", "admin")
    d = tmp_path / "certs"
    before = snapshot(d)
    assert "ca.pem already exists" in refused(tmp_path, "init")
    assert "--force" in refused(tmp_path, "member", "n1", "--host", "127.0.0.2")
    assert "client-admin.pem already exists" in refused(tmp_path, "client", "admin")
    (d / "client-admin.pem").unlink()  # the key alone is not replaced either
    assert "client-admin-key.pem already exists" in refused(tmp_path, "client", "admin")
    del before["client-admin.pem"]
    assert snapshot(d) == before

    ok(tmp_path, "member", "n1", "--host", "127.0.0.2", "--force")
    after = snapshot(d)
    assert after["member-n1.pem"] != before["member-n1.pem"]
    assert after["member-n1-key.pem"] != before["member-n1-key.pem"]
    assert mode(d / "member-n1-key.pem") == 0o600
    ok(tmp_path, "init", "--force")
    assert snapshot(d)["ca.pem"] != before["ca.pem"]
    assert mode(d / "ca-key.pem") == 0o600
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]


def test_clear_errors_and_nothing_written(tmp_path: Path) -> None:
    for args in (("member", "n1", "--host", "127.0.0.1"), ("client", "admin")):
        line = refused(tmp_path, *args)
        assert "no CA in certs" in line and "raftcron certs init" in line, line
    assert not (tmp_path / "certs").exists()
    refused(tmp_path, "init", "--days", "0")
    refused(tmp_path, "init", "--key-type", "dsa")
    assert not (tmp_path / "certs").exists()
    ok(tmp_path, "init", "--days", "100")
    before = snapshot(tmp_path / "certs")
    assert "--host" in refused(tmp_path, "member", "n1")
    assert "not an IP address or a DNS name" in refused(tmp_path, "member", "n1",
                                                        "--host", "bad host")
    assert "member name" in refused(tmp_path, "member", "../n1", "--host", "127.0.0.1")
    assert "outlive the CA" in refused(tmp_path, "client", "admin", "--days", "365")
    assert snapshot(tmp_path / "certs") == before
    ok(tmp_path, "init", "--dir", "other")
    (tmp_path / "certs" / "ca-key.pem").write_bytes((tmp_path / "other" / "ca-key.pem")
                                                    .read_bytes())
    assert "is not the key of" in refused(tmp_path, "client", "admin")
    (tmp_path / "certs" / "ca-key.pem").write_text("not a key\n")
    assert "cannot read the CA" in refused(tmp_path, "client", "admin")


@pytest.mark.etcd
def test_a_member_takes_clients_of_its_ca_only(tmp_path: Path, procs: ProcessGroup) -> None:
    etcdctl = require_binary("etcdctl")
    ok(tmp_path, "init")
    ok(tmp_path, "member", "n1", "--host", "127.0.0.1")
    ok(tmp_path, "client", "admin")
    ok(tmp_path, "init", "--dir", "other")
    ok(tmp_path, "client", "admin", "--dir", "other")
    d = tmp_path / "certs"
    cport, pport = free_port(), free_port()
    argv = [*coord_argv("n1", tmp_path / "data", cport, pport),
            "--cert-file", str(d / "member-n1.pem"), "--key-file", str(d / "member-n1-key.pem"),
            "--trusted-ca-file", str(d / "ca.pem"), "--client-cert-auth",
            "--peer-cert-file", str(d / "member-n1.pem"),
            "--peer-key-file", str(d / "member-n1-key.pem"),
            "--peer-trusted-ca-file", str(d / "ca.pem"), "--peer-client-cert-auth"]
    member = procs.spawn("n1", argv, cport, env={"PYTHONPATH": str(REPO)})
    wait_until(lambda: port_open(cport) or not member.alive(), 30, "the member")
    assert member.alive(), member.log()

    def etcdctl_put(cert_dir: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [etcdctl, "--endpoints", f"https://127.0.0.1:{cport}", "--dial-timeout=3s",
             "--command-timeout=5s", "--cacert", str(d / "ca.pem"),
             "--cert", str(cert_dir / "client-admin.pem"),
             "--key", str(cert_dir / "client-admin-key.pem"), "put", "greeting", "hello"],
            env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, text=True,
            timeout=30, check=False)

    r = etcdctl_put(d)
    assert r.returncode == 0 and r.stdout.strip() == "OK", r.stderr
    r = etcdctl_put(tmp_path / "other")
    assert r.returncode != 0 and "OK" not in r.stdout, r.stdout
    assert etcdctl_put(d).returncode == 0  # still serving
    assert member.alive(), member.log()


@pytest.mark.etcd
def test_a_real_etcd_takes_them_too(tmp_path: Path, procs: ProcessGroup) -> None:
    """Go's x509 (etcd's server and etcdctl) accepts the member and client certificates:
    the files work with a real etcd as they do with coord."""
    etcd, etcdctl = require_binary("etcd"), require_binary("etcdctl")
    ok(tmp_path, "init")
    ok(tmp_path, "member", "e1", "--host", "127.0.0.1")
    ok(tmp_path, "client", "admin")
    ok(tmp_path, "init", "--dir", "other")
    ok(tmp_path, "client", "admin", "--dir", "other")
    d = tmp_path / "certs"
    cport, pport = free_port(), free_port()
    member = [str(d / "member-e1.pem"), str(d / "member-e1-key.pem")]
    argv = [etcd, "--name", "e1", "--data-dir", str(tmp_path / "e1-data"),
            "--listen-client-urls", f"https://127.0.0.1:{cport}",
            "--advertise-client-urls", f"https://127.0.0.1:{cport}",
            "--listen-peer-urls", f"https://127.0.0.1:{pport}",
            "--initial-advertise-peer-urls", f"https://127.0.0.1:{pport}",
            "--initial-cluster", f"e1=https://127.0.0.1:{pport}",
            "--cert-file", member[0], "--key-file", member[1],
            "--trusted-ca-file", str(d / "ca.pem"), "--client-cert-auth",
            "--peer-cert-file", member[0], "--peer-key-file", member[1],
            "--peer-trusted-ca-file", str(d / "ca.pem"), "--peer-client-cert-auth",
            "--log-level", "error"]
    proc = procs.spawn("e1", argv, cport, env={"ETCD_UNSUPPORTED_ARCH": ""})
    wait_until(lambda: port_open(cport) or not proc.alive(), 30, "etcd")
    assert proc.alive(), proc.log()

    def put(cert_dir: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [etcdctl, "--endpoints", f"https://127.0.0.1:{cport}", "--dial-timeout=3s",
             "--command-timeout=5s", "--cacert", str(d / "ca.pem"),
             "--cert", str(cert_dir / "client-admin.pem"),
             "--key", str(cert_dir / "client-admin-key.pem"), "put", "k", "v"],
            env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, text=True,
            timeout=30, check=False)

    wait_until(lambda: put(d).returncode == 0, 30, "etcd taking a put over mutual TLS")
    r = put(tmp_path / "other")
    assert r.returncode != 0 and "OK" not in r.stdout, r.stdout
