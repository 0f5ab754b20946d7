"""An interrupted `make test` (#13 item 19): Ctrl-C or SIGTERM to pytest mid-test leaves no
server running and no data (preallocated WAL) behind; the process logs stay for a look."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.procs import REPO, wait_until

pytestmark = pytest.mark.timeout(180)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead; only its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_leaves_no_member_and_no_data(tmp_path: Path, sig: int) -> None:
    info_file = tmp_path / "victim.json"
    basetemp = tmp_path / "basetemp"
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"--basetemp={basetemp}", "tests/process/_interrupted_victim.py"],
        cwd=REPO, env=dict(os.environ, VICTIM_INFO=str(info_file)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    member = 0
    try:
        wait_until(lambda: info_file.exists() or run.poll() is not None, 60,
                   "the victim test to start its member")
        assert run.poll() is None, run.communicate()[0].decode(errors="replace")
        info = json.loads(info_file.read_text())
        member = info["pid"]
        data = Path(info["data"])
        assert alive(member) and data.is_dir()
        os.kill(run.pid, sig)  # to pytest alone, as a terminal's Ctrl-C or a CI runner's stop
        out = run.communicate(timeout=60)[0].decode(errors="replace")
        wait_until(lambda: not alive(member), 10, f"member pid {member} to be gone")
        assert not data.exists(), f"{data} left behind:\n{out}"
        assert not list(basetemp.rglob("*.wal")), out
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
        if member and alive(member):
            os.killpg(member, signal.SIGKILL)
