"""Secure by default: a member asked to serve plaintext on an address other hosts can reach
refuses to start (one ``Error:`` line, exit 2, the data dir untouched) and says how to fix
it, unless ``--insecure-listen`` is given, which logs a warning at every start. Nothing here
binds anything but loopback: a refused start binds nothing, and the warning is checked on a
loopback member with the loopback test pretending otherwise."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from coord.server import config as config_module
from coord.server.config import ConfigError, ServerConfig, is_loopback
from coord.server.server import CoordServer
from tests.helpers.member import member_config
from tests.helpers.procs import REPO, coord_argv, free_port
from tests.tls.conftest import Certs


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.1", False),
    ("db.example.com", False), ("fe80::1", False)])
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def serve(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    argv = [*coord_argv("n1", tmp_path / "data", free_port(), free_port()), *flags]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("flag", ["--listen-client", "--listen-peer"])
def test_plaintext_on_the_network_is_refused(tmp_path: Path, flag: str) -> None:
    r = serve(tmp_path, flag, f"0.0.0.0:{free_port()}")
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("Error: refusing to serve plaintext on " + flag), r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    for fix in ("--cert-file", "docs/security.md", "127.0.0.1", "--insecure-listen"):
        assert fix in r.stderr, (fix, r.stderr)
    assert not (tmp_path / "data").exists()


def test_tls_on_the_client_port_is_not_enough_for_a_plaintext_peer_port(
        tmp_path: Path, certs: Certs) -> None:
    client_tls = ["--cert-file", str(certs.server.cert), "--key-file", str(certs.server.key)]
    r = serve(tmp_path, *client_tls, "--listen-client", f"0.0.0.0:{free_port()}",
              "--listen-peer", f"0.0.0.0:{free_port()}")
    assert r.returncode == 2 and "--listen-peer 0.0.0.0:" in r.stderr, r.stderr
    assert "--listen-client" not in r.stderr, r.stderr  # that one has TLS


def test_insecure_listen_starts_and_warns_at_every_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = member_config(tmp_path / "n1")
    monkeypatch.setattr(config_module, "is_loopback", lambda host: False)
    with pytest.raises(ConfigError, match="--insecure-listen"):
        ServerConfig(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)
                        if f.name != "insecure_listen"})
    config = dataclasses.replace(base, insecure_listen=True)

    async def start_and_stop() -> None:
        server = CoordServer(config)
        await server.start()
        await server.stop(0)

    for _ in range(2):  # a restart warns again
        with capture_logs() as logs:
            asyncio.run(start_and_stop())
        warnings = [e for e in logs if e["event"] == "coord.insecure_listen"]
        assert len(warnings) == 1, logs
        assert warnings[0]["log_level"] == "warning"
        assert warnings[0]["plaintext"] == [f"--listen-client {config.listen_client}",
                                            f"--listen-peer {config.listen_peer}"]
