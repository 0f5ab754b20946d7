"""coord's HTTP/2 peer client over TLS when the TLS fails, and what the peer transport tells
the operator then (:class:`coord.server.transport_dial.DialLog`).

A dial that fails for a TLS reason carries the ``ssl.SSLError`` as the cause of its
:class:`StreamCallError` — the server's certificate refused by this side during the
handshake, and this side's certificate refused by the server after a TLS 1.3 handshake
(the alert arrives as the connection closes) — so that the transport can say it at warning,
once per peer a minute. Each test's event loop is bounded; servers listen on 127.0.0.1
port 0.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import structlog

from coord.rpc.h2.client import StreamCall, StreamCallError
from coord.rpc.h2.server import H2Server
from coord.rpc.h2.tls import client_context, server_tls
from coord.server.transport_dial import TLS_WARN_INTERVAL, DialLog, tls_error
from tests.api.h2_support import WAIT, run, within
from tests.tls.certs import make_ca

SUM = "/test.S/Sum"


async def _dial(server_tls_args: tuple[Path, Path, Path | None, bool],
                client: ssl.SSLContext) -> StreamCallError:
    cert, key, ca, client_auth = server_tls_args
    tls = server_tls("--", cert, key, ca, client_auth, "TLS1.2")
    server = H2Server(lambda details: None, 1 << 20, tls)
    port = await server.start("127.0.0.1:0")
    try:
        with pytest.raises(StreamCallError) as caught:
            call = await within(StreamCall.open(f"127.0.0.1:{port}", SUM,
                                                connect_timeout=WAIT, ssl=client))
            call.close()
        return caught.value
    finally:
        await server.stop(0)


def test_a_server_certificate_from_another_ca_fails_the_dial_with_the_tls_error(
        tmp_path: Path) -> None:
    ca, other = make_ca(tmp_path), make_ca(tmp_path, "other-ca")
    pair = ca.issue(tmp_path, "server")
    err = run(_dial((pair.cert, pair.key, None, False), client_context(cacert=other.cert)))
    assert isinstance(err.__cause__, ssl.SSLCertVerificationError) and err.tls
    assert "certificate verify failed" in str(err)


def test_this_sides_certificate_refused_after_a_tls13_handshake_is_the_cause(
        tmp_path: Path) -> None:
    # The server wants a certificate from its CA; the client offers one from another CA.
    # With TLS 1.3 the client's handshake is done before the server says no, so the
    # refusal comes as the connection closes (asyncio sends no alert): the dial's error
    # still says it is TLS's.
    ca, other = make_ca(tmp_path), make_ca(tmp_path, "other-ca")
    pair, stranger = ca.issue(tmp_path, "server"), other.issue(tmp_path, "client")
    client = client_context(cacert=ca.cert, cert=stranger.cert, key=stranger.key,
                            min_version="TLS1.3")
    err = run(_dial((pair.cert, pair.key, ca.cert, True), client))
    assert err.tls and tls_error(err) is err
    assert "refuse this side's certificate" in str(err)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _tls_failure(text: str) -> StreamCallError:
    try:
        try:
            raise ssl.SSLCertVerificationError(1, text)
        except ssl.SSLError as cause:
            raise StreamCallError(f"127.0.0.1:2380: {cause}") from cause
    except StreamCallError as err:
        return err


def test_dial_log_warns_once_a_minute_per_peer_and_on_a_new_error() -> None:
    clock = Clock()
    dials = DialLog(clock)
    bad_ca, expired = _tls_failure("unable to get local issuer"), _tls_failure("expired")
    with structlog.testing.capture_logs() as logs:
        assert dials.failed(1, "a:1", bad_ca)
        clock.now += 1
        assert not dials.failed(1, "a:1", bad_ca)  # the same error within the minute
        assert dials.failed(2, "b:1", bad_ca)  # another peer
        assert dials.failed(1, "a:1", expired)  # another error
        clock.now += TLS_WARN_INTERVAL
        assert dials.failed(1, "a:1", expired)  # a minute later
        dials.reached(1)
        assert dials.failed(1, "a:1", expired)  # failing again after it was reached
        assert not dials.failed(1, "a:1", StreamCallError("a:1: connection refused"))
        assert not dials.failed(1, "a:1", ConnectionRefusedError())
    assert {(e["log_level"], e["event"]) for e in logs} == {
        ("warning", "transport.peer_tls_failed")}
    assert [e["to"] for e in logs] == ["1", "2", "1", "1", "1"]
    assert "unable to get local issuer" in logs[0]["error"]
    assert "--peer-trusted-ca-file" in logs[0]["hint"]
