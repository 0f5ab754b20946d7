"""Issue #16's acceptance: "``etcdctl --cacert --cert --key`` against a TLS coord passes the
same etcdctl differential as plaintext". The differential itself (``tests/compat``,
etcdctl against a real etcd and coord, outputs compared byte for byte after
normalisation) is run again with ``COMPAT_TLS=1``: both servers then serve their client
port with a certificate and ``--client-cert-auth``, and every etcdctl step dials
``https://`` with ``--cacert``, ``--cert`` and ``--key`` (``tests/compat/harness_tls.py``).
The same test ids as the plaintext run must pass (or be the same documented xfails)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.procs import REPO

pytestmark = [pytest.mark.slow, pytest.mark.etcd, pytest.mark.timeout(900)]
MODULES = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests/compat").glob(
    "test_etcdctl_*.py"))


def pytest_run(tmp_path: Path, *args: str, tls: bool) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPAT_")}
    if tls:
        env["COMPAT_TLS"] = "1"
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--basetemp={tmp_path / ('tls' if tls else 'plain')}", "-rA", *args, *MODULES],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        out = run.communicate(timeout=840)[0].decode(errors="replace")
    finally:
        if run.poll() is None:  # timed out or interrupted: SIGTERM lets its fixtures stop
            os.killpg(run.pid, signal.SIGTERM)  # its servers (each in its own session)
            try:
                run.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
    return out


def outcomes(report: str) -> dict[str, str]:
    """test id -> PASSED / XFAIL / FAILED / ERROR ... from ``-rA``'s short summary."""
    return {m.group(2): m.group(1) for m in re.finditer(
        r"^(PASSED|FAILED|ERROR|XFAIL|XPASS|SKIPPED)\s+(\S+)", report, flags=re.M)}


def test_the_etcdctl_differential_passes_over_mutual_tls(tmp_path: Path) -> None:
    collected = pytest_run(tmp_path, "--collect-only", tls=False)
    ids = set(re.findall(r"^(tests/compat/\S+::\S+)$", collected, flags=re.M))
    assert len(ids) > 50, collected[-2000:]
    report = pytest_run(tmp_path, tls=True)
    got = outcomes(report)
    assert set(got) == ids, (sorted(ids - set(got)), report[-4000:])
    bad = {t: o for t, o in got.items() if o not in ("PASSED", "XFAIL")}
    assert not bad, (bad, report[-8000:])


def test_compat_tls_pairs_really_speak_mutual_tls(tmp_path: Path, etcd_bin: str,
                                                  etcdctl_bin: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The differential's TLS mode has teeth: each side's etcdctl dials https:// with a
    client certificate, and the same etcdctl without it is refused by both servers."""
    from tests.compat.harness import open_pair
    from tests.compat.harness_servers import ctl_env

    monkeypatch.setenv("COMPAT_TLS", "1")
    monkeypatch.delenv("COMPAT_CLUSTER", raising=False)
    pair = open_pair(tmp_path / "pair", etcd_bin, etcdctl_bin, "coord")
    try:
        for server in pair.servers:
            argv = server.ctl_argv(["get", "compat-ready"])
            assert argv[1] == f"--endpoints=https://{server.endpoint}", argv
            assert any(a.startswith("--cert=") for a in argv), argv
            assert server.ctl(["put", "k", "v"]).rc == 0
            bare = [a for a in argv if not a.startswith(("--cert=", "--key="))]
            r = subprocess.run([*bare[:-2], "--dial-timeout=2s", "get", "k"],
                               capture_output=True, timeout=30, env=ctl_env(), check=False)
            assert r.returncode != 0 and b"v" not in r.stdout, (server.label, r)
    finally:
        pair.close()
