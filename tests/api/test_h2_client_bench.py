"""``bench.client_cpu`` (the peer client's CPU per write and per unary call, plaintext and
``--tls``) runs, with small counts, as the commands in the report and docs give it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers.procs import REPO


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_client_cpu_measures_writes_and_unary_calls(tls: bool) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.client_cpu", "--calls", "50", "--repeat", "2",
         *(["--tls"] if tls else [])],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("write", "unary-tls" if tls else "unary"):
        assert re.search(rf"^{name} +\d+\.\d+ µs per op \(best of 2; median \d+\.\d+\)$",
                         done.stdout, re.M), done.stdout
