"""The benchmark commands of docs/benchmarks.md's "HTTP/2 core" section run, with small
counts: ``bench.cpu_per_op`` plaintext and over TLS (``--tls``: a member with a test
certificate, the load generator trusting its CA), and ``bench.call_cpu``."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers.procs import REPO


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_cpu_per_op_measures_a_member(tls: bool) -> None:
    out = _run("bench.cpu_per_op", "--ops", "300", "--clients", "4", "--only", "coord",
               "--workloads", "put,get", "--idle", "0", *(["--tls"] if tls else []))
    for workload in ("put", "get"):
        line = next(x for x in out.splitlines() if x.startswith(f"coord {workload}"))
        assert "errors 0" in line, out
        assert re.search(r"CPU \d+\.\d+ ms/op", line), out


def test_cpu_per_op_tls_needs_a_single_coord_member() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.cpu_per_op", "--tls"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--tls needs --only coord" in done.stderr


def test_call_cpu_runs_the_h2_path() -> None:
    out = _run("bench.call_cpu", "--calls", "500", "--repeat", "1", "--only", "h2")
    assert re.match(r"h2\s+\d+\.\d+ µs per call", out), out


@pytest.mark.parametrize("args", [["--tls"], ["--headers", "indexed"],
                                  ["--headers", "indexed", "--tls"]],
                         ids=["tls", "indexed", "indexed-tls"])
def test_call_cpu_over_tls_and_with_indexed_headers(args: list[str]) -> None:
    out = _run("bench.call_cpu", "--calls", "300", "--repeat", "1", "--only", "h2", *args)
    assert re.match(r"h2\s+\d+\.\d+ µs per call", out), out


def test_call_cpu_against_another_tree_alternates_rounds() -> None:
    """``--against DIR``: every round a fresh process of this tree's runtime or DIR's (here
    the same tree), each figure listed."""
    out = _run("bench.call_cpu", "--calls", "300", "--repeat", "2", "--only", "h2",
               "--headers", "indexed", "--tls", "--against", str(REPO))
    lines = out.splitlines()
    assert [line.split()[3] for line in lines] == ["this", "base"], out
    for line in lines:
        assert re.match(r"h2 indexed tls (this|base) best +\d+\.\d+ median +\d+\.\d+ µs per "
                        r"call  \[\d+\.\d+ \d+\.\d+\]", line), out
