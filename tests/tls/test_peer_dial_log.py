"""An operator with a wrong peer certificate sees it at the default log level: a member whose
dials to a peer fail for a TLS reason logs ``transport.peer_tls_failed`` at warning — once
per peer a minute (or when the error changes), not at every retry.

Two real members (``raftcron coord serve``) on loopback: n1 is configured right; n2 trusts
another CA on its peer port (``--peer-trusted-ca-file``). n2's dials fail to verify n1's
certificate; n1's dials are refused by n2, which does not trust n1's certificate. Both say
so. Bounded: each wait polls the logs with a deadline; the rate limit is checked over a
stated interval in which the dials are retried (the debug lines count them).
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import pytest

from tests.helpers.procs import (
    REPO,
    Proc,
    coord_argv,
    free_port,
    port_open,
    process_group,
    wait_until,
)
from tests.tls.conftest import Certs

pytestmark = pytest.mark.timeout(120)
OBSERVE = 5.0
"""Seconds over which the warnings are counted while the dials keep failing."""


def events(proc: Proc, name: str) -> list[dict[str, object]]:
    """The JSON log lines of ``proc`` with event ``name``."""
    found = []
    for line in proc.log().splitlines():
        if name in line:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == name:
                found.append(entry)
    return found


def listening(proc: Proc, port: int) -> bool:
    return port_open(port) or not proc.alive()


def warned(proc: Proc) -> bool:
    return bool(events(proc, "transport.peer_tls_failed"))


def test_a_wrong_peer_certificate_is_warned_about_once_per_peer(
        tmp_path: Path, certs: Certs) -> None:
    names = ["n1", "n2"]
    cports = {n: free_port() for n in names}
    pports = {n: free_port() for n in names}
    initial = ",".join(f"{n}=127.0.0.1:{pports[n]}" for n in names)
    trusted = {"n1": certs.ca.cert, "n2": certs.stranger.cert.parent / "other-ca.pem"}
    assert trusted["n2"].is_file()
    with process_group(tmp_path) as group:
        procs: dict[str, Proc] = {}
        for n in names:
            argv = [*coord_argv(n, group.workdir / f"{n}-data", cports[n], pports[n], initial),
                    "--peer-cert-file", str(certs.server.cert),
                    "--peer-key-file", str(certs.server.key),
                    "--peer-trusted-ca-file", str(trusted[n]), "--peer-client-cert-auth",
                    "--peer-cert-allowed-cn", "server"]
            procs[n] = group.spawn(n, argv, cports[n], env={
                "PYTHONPATH": str(REPO), "RAFTCRON_LOG_LEVEL": "debug"})
        for n in names:
            wait_until(partial(listening, procs[n], cports[n]), 30, n)
            assert procs[n].alive(), procs[n].log()
        for n in names:
            wait_until(partial(warned, procs[n]), 30, f"{n} warns about its failing peer dials")

        before = {n: len(events(procs[n], "transport.send_failed")) for n in names}
        deadline = time.monotonic() + OBSERVE
        while time.monotonic() < deadline:  # a stated interval: the dials keep failing
            time.sleep(0.2)
        for n in names:
            warnings = events(procs[n], "transport.peer_tls_failed")
            retries = len(events(procs[n], "transport.send_failed")) - before[n]
            assert retries >= 2, f"{n}: the dials are retried ({retries} in {OBSERVE} s)"
            assert all(w["level"] == "warning" for w in warnings)
            # One warning per distinct error (the first minute): not one per retry.
            assert len(warnings) == len({str(w["error"]) for w in warnings}) <= 2, warnings
        n2_errors = " ".join(str(w["error"]) for w in events(procs["n2"],
                                                              "transport.peer_tls_failed"))
        assert "certificate verify failed" in n2_errors
        n1_errors = " ".join(str(w["error"]) for w in events(procs["n1"],
                                                              "transport.peer_tls_failed"))
        assert "certificate" in n1_errors
