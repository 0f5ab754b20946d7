"""TLS on the client port of ``raftcron coord serve`` (etcd's ``--cert-file``,
``--key-file``, ``--trusted-ca-file``, ``--client-cert-auth``, ``--tls-min-version``):
a client trusting the CA works; with ``--client-cert-auth`` a client without a certificate,
with one from another CA or with an expired one is refused while a normal client keeps
working; a plaintext client fails cleanly; ALPN is ``h2``. Every refusal is bounded in time
(a call deadline or a socket timeout), never waited for."""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import grpc
import pytest

from coord.pb import rpc_pb2, rpc_pb2_grpc
from tests.helpers.procs import REPO, ProcessGroup, coord_argv, free_port, wait_until
from tests.tls.certs import Pair
from tests.tls.conftest import Certs, start_tls_coord, tls_argv

CALL_TIMEOUT = 5.0


def channel(port: int, root: Path | None, pair: Pair | None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=root.read_bytes() if root else None,
        private_key=pair.key.read_bytes() if pair else None,
        certificate_chain=pair.cert.read_bytes() if pair else None)
    return grpc.secure_channel(f"127.0.0.1:{port}", creds)


def put_and_get(ch: grpc.Channel, key: bytes) -> bytes:
    kv = rpc_pb2_grpc.KVStub(ch)
    kv.Put(rpc_pb2.PutRequest(key=key, value=b"v-" + key), timeout=CALL_TIMEOUT)
    got = kv.Range(rpc_pb2.RangeRequest(key=key), timeout=CALL_TIMEOUT)
    return bytes(got.kvs[0].value)


def refused(ch: grpc.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"k"), timeout=CALL_TIMEOUT)
    return info.value.code()  # type: ignore[no-any-return,attr-defined]


def test_a_client_trusting_the_ca_works_without_client_cert_auth(
        procs: ProcessGroup, certs: Certs) -> None:
    port = start_tls_coord(procs, certs)
    with channel(port, certs.ca.cert, None) as ch:
        assert put_and_get(ch, b"plain-ca") == b"v-plain-ca"
    # A client that does not trust the server's CA refuses the server.
    with channel(port, certs.ca.cert.parent / "other-ca.pem", None) as ch:
        assert refused(ch) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_accepts_a_signed_client(mtls_port: int, certs: Certs) -> None:
    with channel(mtls_port, certs.ca.cert, certs.client) as ch:
        assert put_and_get(ch, b"mtls") == b"v-mtls"


@pytest.mark.parametrize("who", ["no certificate", "another CA", "expired"])
def test_mutual_tls_refuses_and_keeps_serving(mtls_port: int, certs: Certs, who: str) -> None:
    pair = {"no certificate": None, "another CA": certs.stranger,
            "expired": certs.expired}[who]
    with channel(mtls_port, certs.ca.cert, pair) as ch:
        assert refused(ch) == grpc.StatusCode.UNAVAILABLE
    with channel(mtls_port, certs.ca.cert, certs.client) as ch:  # a normal client still works
        assert put_and_get(ch, who.encode()) == b"v-" + who.encode()


def closed_on_us(sock: socket.socket) -> bool:
    """True when the server ends the connection (EOF, a reset or a TLS alert) instead of
    answering; a silent server fails the test by the socket's timeout (TimeoutError)."""
    try:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\0" * 64)
        return sock.recv(1 << 16) == b""
    except ssl.SSLError as err:
        return "ALERT" in err.reason.upper() if err.reason else False
    except ConnectionResetError:
        return True


def test_the_handshake_negotiates_h2_and_cuts_off_a_client_without_a_certificate(
        mtls_port: int, certs: Certs) -> None:
    """At the TLS level: ALPN is h2; a client without a certificate is cut off (with TLS
    1.3 after its own Finished, so on its first read), not left hanging."""
    ctx = ssl.create_default_context(cafile=str(certs.ca.cert))
    ctx.set_alpn_protocols(["h2"])
    ctx.load_cert_chain(certs.client.cert, certs.client.key)
    with socket.create_connection(("127.0.0.1", mtls_port), timeout=CALL_TIMEOUT) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.selected_alpn_protocol() == "h2"
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert not closed_on_us(tls)  # the server's SETTINGS come back
    bare = ssl.create_default_context(cafile=str(certs.ca.cert))
    bare.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", mtls_port), timeout=CALL_TIMEOUT) as raw:
        try:
            tls = bare.wrap_socket(raw, server_hostname="127.0.0.1")
        except ssl.SSLError:
            return  # refused in the handshake itself (TLS 1.2)
        with tls:
            assert closed_on_us(tls)


def test_a_plaintext_client_fails_cleanly(mtls_port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{mtls_port}") as ch:
        assert refused(ch) == grpc.StatusCode.UNAVAILABLE
    # At the socket level: the server closes a connection that does not speak TLS.
    with socket.create_connection(("127.0.0.1", mtls_port), timeout=CALL_TIMEOUT) as raw:
        assert closed_on_us(raw)


def test_tls_min_version_13_refuses_a_tls12_client(procs: ProcessGroup,
                                                   certs: Certs) -> None:
    port = start_tls_coord(procs, certs, "--tls-min-version", "TLS1.3")
    ctx = ssl.create_default_context(cafile=str(certs.ca.cert))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", port), timeout=CALL_TIMEOUT) as raw, \
            pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    with channel(port, certs.ca.cert, None) as ch:
        assert put_and_get(ch, b"tls13") == b"v-tls13"


@pytest.mark.parametrize(("flags", "says"), [
    (["--cert-file", "{cert}"], "--cert-file and --key-file go together"),
    (["--client-cert-auth"], "need --cert-file and --key-file"),
    (["--cert-file", "{cert}", "--key-file", "{key}", "--client-cert-auth"],
     "--client-cert-auth needs --trusted-ca-file"),
    (["--cert-file", "{cert}", "--key-file", "{key}", "--tls-min-version", "TLS1.1"],
     "--tls-min-version: expected one of TLS1.2, TLS1.3"),
    (["--cert-file", "/nonexistent.pem", "--key-file", "{key}"],
     "--cert-file: no such file"),
    (["--cert-file", "{cert}", "--key-file", "{other_key}"], "cannot be loaded"),
    (["--cert-file", "{cert}", "--key-file", "{key}", "--trusted-ca-file", "{key}"],
     "cannot be loaded"),
])
def test_tls_flags_that_cannot_work_are_exit_2(tmp_path: Path, certs: Certs,
                                               flags: list[str], says: str) -> None:
    argv = [*coord_argv("n1", tmp_path / "data", free_port(), free_port()),
            *(f.format(cert=certs.server.cert, key=certs.server.key,
                      other_key=certs.client.key) for f in flags)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("Error: ") and says in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "data").exists()  # refused before the data dir is touched


def test_an_agent_with_mutual_tls_runs_jobs_through_its_own_tls_port(
        procs: ProcessGroup, certs: Certs, tmp_path: Path) -> None:
    """``agent`` with --client-cert-auth and RAFTCRON_AGENT_LOCAL=0: its worker dials the
    member's TLS client port with the member's own CA and certificate, and runs a job."""
    out = tmp_path / "ran.txt"
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("jobs:\n  - name: agent-tls\n    schedule: '* * * * * *'\n"
                    f"    command: 'echo $RAFTCRON_JOB >> {out}'\n")
    cport, pport = free_port(), free_port()
    serve = tls_argv("n1", tmp_path / "data", cport, pport, certs, "--client-cert-auth")
    argv = [*serve[:serve.index("serve") - 1], "agent", *serve[serve.index("serve") + 1:],
            "--jobs", str(jobs), "--log-dir", str(tmp_path / "logs")]
    agent = procs.spawn("agent", argv, cport, env={"PYTHONPATH": str(REPO),
                                                   "RAFTCRON_AGENT_LOCAL": "0"})
    wait_until(lambda: (out.exists() and "agent-tls" in out.read_text()) or not agent.alive(),
               30, "the agent's job to run")
    assert agent.alive(), agent.log()
