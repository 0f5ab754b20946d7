"""The command line as a user meets it (#13 item 18): `--version`, shell completion, help
without `<bool>` artifacts, `--limit` checked, and a refused connection that fails at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer.main

from scheduler.cli import app
from tests.helpers.procs import REPO, free_port

ENV = dict(os.environ, PYTHONPATH=str(REPO))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *args], capture_output=True,
                          text=True, check=False, timeout=60, env=ENV)


def command_paths() -> list[list[str]]:
    """Every command and group of the CLI, as the words a user types."""
    paths: list[list[str]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():  # a group's subcommands
            walk(sub, [*path, name])
    walk(typer.main.get_command(app), [])
    return paths


def test_version() -> None:
    res = run("--version")
    assert res.returncode == 0 and res.stdout.strip() == "raftcron 0.1.0", res


def _from_bash(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `raftcron` from a bash shell, as a user types it: typer detects
    the shell from the parent processes (under `make` the parent would be sh)."""
    script = Path(sys.executable).parent / "raftcron"
    line = " ".join([str(script), *args]) + "; exit $?"  # no exec: bash stays the parent
    return subprocess.run(["bash", "-c", line], capture_output=True, text=True, check=False,
                          timeout=60, env=env or ENV)


def test_show_completion_prints_a_bash_script() -> None:
    res = _from_bash("--show-completion")
    assert res.returncode == 0, res.stderr
    assert "complete -o default -F" in res.stdout and "COMPREPLY" in res.stdout, res.stdout


def test_install_completion_for_bash(tmp_path: Path) -> None:
    """As a user installs it: the `raftcron` script, completion written under $HOME."""
    res = _from_bash("--install-completion", env=dict(ENV, HOME=str(tmp_path)))
    assert res.returncode == 0, res.stderr
    installed = tmp_path / ".bash_completions" / "raftcron.sh"
    assert "_raftcron_completion" in installed.read_text()
    assert f"source '{installed}'" in (tmp_path / ".bashrc").read_text()


def test_no_help_shows_bool_artifacts() -> None:
    paths = command_paths()
    assert ["jobs", "logs"] in paths and ["agent"] in paths and len(paths) > 15
    for path in paths:
        res = run(*path, "--help")
        assert res.returncode == 0, (path, res.stderr)
        assert "<bool>" not in res.stdout, (path, res.stdout)
        assert "--help" in res.stdout


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_limit_below_one_is_bad_input(limit: str) -> None:
    res = run("jobs", "history", "x", "--limit", limit, "--endpoints", "127.0.0.1:1")
    assert res.returncode == 2, res
    assert res.stderr == f"Error: --limit must be at least 1, not {limit}\n"


def test_a_refused_connection_fails_at_once() -> None:
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    run("--help")  # the process's start-up alone, on this machine under its present load
    startup = time.monotonic() - t0
    t0 = time.monotonic()
    res = run("locks", "--endpoints", f"127.0.0.1:{port}")
    took = time.monotonic() - t0
    assert res.returncode == 1, res
    assert res.stderr == (f"Error: cannot reach the store at 127.0.0.1:{port}: "
                          f"127.0.0.1:{port}: connection refused\n")
    # It waited out the client's retries before (~5.5 s); now it is the process's start-up
    # (measured just before, so a loaded machine's slow start is not taken for a wait).
    assert took < startup + 3.0, f"took {took:.1f}s, start-up {startup:.1f}s"
