"""Client commands: a store that answers with an error is not "unreachable" (#13 item 13).

A request larger than the store accepts was reported as "cannot reach the store"; it now
says the request is too large and what the limit is, in one `Error:` line, exit 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.procs import REPO, ProcessGroup, start_coord


@pytest.mark.parametrize("size", [1_700_000, 3_000_000])
def test_a_request_too_large_says_so_with_the_limit(procs: ProcessGroup, tmp_path: Path,
                                                    size: int) -> None:
    """1.7 MB: over etcd's 1.5 MiB request limit (the store's own error); 3 MB: over the
    2 MiB gRPC message limit (the transport's). Both name the limit."""
    server = start_coord(procs)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cli = [sys.executable, "-m", "scheduler.cli"]
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("jobs:\n  - name: big\n    schedule: '@hourly'\n    command: 'echo'\n")
    subprocess.run([*cli, "apply", "-f", str(jobs), "--endpoints", server.endpoint],
                   capture_output=True, text=True, check=True, timeout=120, env=env)
    # `validate`/`apply` refuse an oversized job before sending it; a suspension reason is
    # free text the store sees as it is (passed in-process: exec refuses a 1.7 MB argument).
    code = ("import sys\nfrom scheduler.cli import main\n"
            f"sys.argv = ['raftcron', 'jobs', 'suspend', 'big', '--reason', 'x' * {size}, "
            f"'--endpoints', {server.endpoint!r}]\nmain()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, timeout=120, env=env)
    assert res.returncode != 0, res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert "cannot reach" not in lines[0] and "too large" in lines[0], lines[0]
    assert "1,572,864 bytes" in lines[0] or "2,097,152 bytes" in lines[0], lines[0]


def test_an_unexpected_error_is_a_plain_traceback(tmp_path: Path) -> None:
    """No rich traceback boxes (typer's default drew one around every unexpected error,
    e.g. the agents' AdminError in #13 item 1): a plain Python traceback, exit 1."""
    code = ("from scheduler.cli import app\n"
            "@app.command('boom')\n"
            "def boom() -> None:\n"
            "    raise RuntimeError('unexpected')\n"
            "app(['boom'])\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, timeout=60, cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="80"))
    assert res.returncode == 1
    assert "Traceback (most recent call last)" in res.stderr, res.stderr
    assert "RuntimeError: unexpected" in res.stderr
    assert not any(ch in res.stderr for ch in "│╭╰"), res.stderr
