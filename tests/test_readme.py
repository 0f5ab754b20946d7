"""The README, followed literally: `make run`, the commands "in a second terminal", the etcdctl
tour and the own-jobs recipe, then Ctrl-C.

The commands are read out of README.md at test time, so an edit to the README is what gets
tested. The one liberty taken: `make run` runs in a scratch directory holding the repo's
Makefile, lock and example file, whose `.venv` is a link to the suite's own (already
installed, so make starts the agent at once) — its data dir and job logs land there, not
in the checkout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.binaries import in_ci, require_binary
from tests.helpers.procs import REPO, port_open, wait_until

README = REPO / "README.md"
# Commands that run until stopped: the reader watches their output, then presses Ctrl-C.
BLOCKING = ("etcdctl watch", "etcdctl lock")


def section(heading: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def commands(block: str) -> list[str]:
    """The block's command lines, each without its trailing `# comment`."""
    out = []
    for raw in block.splitlines():
        line = re.sub(r"\s+#.*$", "", raw).strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def sh(cwd: Path, cmd: str, env: dict[str, str],
       timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def ok(cwd: Path, cmd: str, env: dict[str, str]) -> str:
    r = sh(cwd, cmd, env)
    assert r.returncode == 0, (
        f"README command failed: {cmd}\nexit {r.returncode}\n{r.stdout}{r.stderr}")
    assert "Traceback" not in r.stdout + r.stderr, cmd
    return r.stdout


def watch_output(cwd: Path, cmd: str, env: dict[str, str], until: str, seconds: float) -> str:
    """Run a command that blocks, until its output shows ``until``; then Ctrl-C it."""
    out = cwd / "blocking.out"
    with out.open("w") as f:
        p = subprocess.Popen(["bash", "-c", f"exec {cmd}"], cwd=cwd, env=env, stdout=f,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: re.search(until, out.read_text()) is not None, seconds,
                   f"{until!r} from `{cmd}`")
    finally:
        os.killpg(p.pid, signal.SIGINT)
        p.wait(timeout=10)
    return out.read_text()


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    if port_open(2379) or port_open(2380):
        msg = "127.0.0.1:2379/2380 is in use; the README's `make run` needs those ports"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    stamp = REPO / ".venv" / ".installed"
    newest = max((REPO / n).stat().st_mtime for n in ("pyproject.toml", "requirements.lock"))
    if not stamp.exists() or stamp.stat().st_mtime < newest:
        # make would reinstall into the suite's venv from the scratch copy: never do that.
        pytest.fail(".venv is older than pyproject.toml/requirements.lock: run `make test`")
    work = tmp_path / "checkout"
    work.mkdir()
    for name in ("Makefile", "pyproject.toml", "requirements.lock", "jobs.example.yaml"):
        shutil.copy2(REPO / name, work / name)  # mtimes kept: the venv's install stamp is newer
    (work / ".venv").symlink_to(REPO / ".venv")
    log = (work / "make-run.log").open("wb")
    proc = subprocess.Popen(["make", "run"], cwd=work, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield work, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.mark.slow
def test_the_readme_from_make_run_to_ctrl_c(make_run: tuple[Path, subprocess.Popen[bytes]]) -> None:
    work, make = make_run
    etcdctl = require_binary("etcdctl")
    env = {**os.environ, "PATH": f"{Path(etcdctl).parent}:{os.environ['PATH']}"}
    env.pop("RAFTCRON_ENDPOINTS", None)
    log = work / "make-run.log"
    wait_until(lambda: port_open(2379) or make.poll() is not None, 60, "make run's agent")
    assert make.poll() is None, log.read_text()

    # "In a second terminal" — once the heartbeat (every 5 s) has a finished run.
    def heartbeat_ran() -> bool:
        r = sh(work, ".venv/bin/raftcron jobs history heartbeat -o json", env)
        return r.returncode == 0 and '"succeeded"' in r.stdout
    wait_until(heartbeat_ran, 45, "a finished heartbeat run\n" + log.read_text())
    second = commands(blocks(section("The two commands"), "sh")[1])
    assert second and all(c.startswith(".venv/bin/raftcron") for c in second), second
    outputs = {c: ok(work, c, env) for c in second}
    assert "heartbeat" in outputs[".venv/bin/raftcron jobs list"]
    assert "succeeded" in outputs[".venv/bin/raftcron jobs history heartbeat"]

    # The etcdctl tour, line by line, as one shell session would run it.
    tour = section("A 5-minute tour with etcdctl")
    for cmd in commands(blocks(tour, "sh")[0]):
        if cmd.startswith("export "):
            name, _, value = cmd.removeprefix("export ").partition("=")
            env[name] = value
            continue
        if cmd.startswith("etcdctl watch"):
            # "see locks come and go as jobs run": the heartbeat takes its lock every 5 s.
            assert "/cron/lock/" in watch_output(work, cmd, env, r"PUT\s*\n/cron/lock/", 30)
            continue
        if cmd.startswith("etcdctl lock"):
            assert "mylock/" in watch_output(work, cmd, env, r"mylock/", 15)
            continue
        out = ok(work, cmd, env)
        if cmd == "etcdctl put greeting hello":
            assert out.strip() == "OK"
        if cmd.startswith("etcdctl get greeting -w json"):
            header = json.loads(out)["header"]
            assert {"cluster_id", "member_id", "revision"} <= header.keys()
        if cmd.startswith("etcdctl lease grant 30"):
            assert re.search(r"lease [0-9a-f]+ granted with TTL\(30s\)", out), out

    # "Define your own jobs": the README's jobs.yaml, then its commands in order.
    (work / "jobs.yaml").write_text(blocks(tour, "yaml")[0])
    for cmd in commands(blocks(tour, "sh")[1]):
        if cmd.startswith(".venv/bin/raftcron jobs kill"):
            # A reader kills a run they just triggered once it is running.
            wait_until(lambda: "backup" in sh(work, ".venv/bin/raftcron locks", env).stdout,
                       30, "the triggered backup run to hold its lock")
        out = ok(work, cmd, env)
        if "apply -f jobs.yaml --prune" in cmd:
            assert "backup" in out
    listed = json.loads(ok(work, ".venv/bin/raftcron jobs list -o json", env))
    assert [j["name"] for j in listed] == ["backup"]  # --prune removed the example's jobs

    # Ctrl-C in the make run terminal stops the agent cleanly.
    os.killpg(make.pid, signal.SIGINT)
    make.wait(timeout=60)
    text = log.read_text()
    assert "Traceback" not in text
    assert "coord.stopped" in text, text[-3000:]
