"""What a job gets from its worker: a clean environment, its own user, private log files.

The agent's environment often holds secrets (store passwords, cloud tokens); a job sees
only what its spec names (``inherit_env``, ``env``) plus raftcron's own variables and the
identity of the user it runs as. Job output can hold secrets too, so log files are 0600 in
0700 directories.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from scheduler.cli import app
from scheduler.errors import ExecutorError, SpecError
from scheduler.executor import RunRequest, run_job
from scheduler.spec import DEFAULT_INHERIT_ENV, load_jobs_text
from tests.helpers.procs import REPO, ProcessGroup, free_port, wait_until

SECRET = "s3cr3t-agent-token-5d41402a"


def request(command: tuple[str, ...] | str, **kw: Any) -> RunRequest:
    base: dict[str, Any] = {"job": "j", "occurrence": "20261122T013000Z", "run_id": "r-1",
                            "fencing_token": 42, "attempt": 1, "command": command}
    base.update(kw)
    return RunRequest(**base)


def job_env(req: RunRequest, base: dict[str, str], **kw: Any) -> dict[str, str]:
    result = asyncio.run(asyncio.wait_for(run_job(req, base_env=base, tail_bytes=65536, **kw),
                                          20))
    assert result.ok, result
    return dict(line.split("=", 1) for line in result.output_tail.splitlines() if "=" in line)


def test_job_gets_a_clean_environment() -> None:
    base = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "LC_TIME": "C", "TZ": "UTC",
            "AWS_SECRET_ACCESS_KEY": SECRET, "HOME": "/agent/home", "RAFTCRON_ENDPOINTS": "x"}
    env = job_env(request(("env",), env={"FOO": "bar"}), base)
    me = pwd.getpwuid(os.geteuid())
    assert SECRET not in "".join(f"{k}={v}" for k, v in env.items())
    assert {k: env[k] for k in ("PATH", "LANG", "LC_TIME", "TZ", "FOO")} == {
        "PATH": os.environ["PATH"], "LANG": "C.UTF-8", "LC_TIME": "C", "TZ": "UTC",
        "FOO": "bar"}
    # HOME, USER and LOGNAME are the job user's (like cron), not inherited
    assert (env["HOME"], env["USER"], env["LOGNAME"]) == (me.pw_dir, me.pw_name, me.pw_name)
    assert "RAFTCRON_ENDPOINTS" not in env
    extra = set(env) - set(base) - {"FOO", "HOME", "USER", "LOGNAME", "PWD", "SHLVL", "_"}
    assert {k for k in extra if not k.startswith("RAFTCRON_")} == set()
    assert {"RAFTCRON_JOB", "RAFTCRON_FENCING_TOKEN", "RAFTCRON_SUPERVISOR"} <= extra


def test_inherit_env_names_exactly_what_a_job_sees() -> None:
    base = {"PATH": os.environ["PATH"], "DB_URL": "postgres://x", "LANG": "C", "AWS_A": "1",
            "AWS_B": "2", "OTHER": "3"}
    env = job_env(request(("env",), inherit_env=("PATH", "DB_URL", "AWS_*")), base)
    assert {k: env.get(k) for k in base} == {
        "PATH": os.environ["PATH"], "DB_URL": "postgres://x", "LANG": None, "AWS_A": "1",
        "AWS_B": "2", "OTHER": None}
    env = job_env(request(("/usr/bin/env",), inherit_env=()), base)
    assert "PATH" not in env
    env = job_env(request(("env",), inherit_env=("*",)), base)
    assert {k: env.get(k) for k in base} == base


def test_spec_inherit_env_and_user_fields() -> None:
    text = ("jobs:\n  - name: a\n    schedule: '@every 5s'\n    command: env\n{extra}")
    (spec,) = load_jobs_text(text.format(extra=""))
    assert spec.inherit_env == DEFAULT_INHERIT_ENV == ("PATH", "LANG", "LC_*", "TZ")
    assert spec.user is None
    (spec,) = load_jobs_text(text.format(extra="    inherit_env: [PATH, 'LC_*']\n"
                                                "    user: nobody\n"))
    req = RunRequest.from_spec(spec, occurrence="o", run_id="r", fencing_token=1)
    assert (req.inherit_env, req.user) == (("PATH", "LC_*"), "nobody")
    for extra, message in [
        ("    inherit_env: PATH\n", 'field "inherit_env": must be a list of variable names'),
        ("    inherit_env: [PA-TH]\n", '"PA-TH" is not a variable name'),
        ("    inherit_env: [RAFTCRON_ENDPOINTS]\n", "names starting with RAFTCRON_ are set"),
        ("    inherit_env: [PATH, PATH]\n", '"PATH" is listed twice'),
        ("    user: 'a b'\n", 'field "user": must be a user name or numeric uid'),
    ]:
        with pytest.raises(SpecError) as err:
            load_jobs_text(text.format(extra=extra), "jobs.yaml")
        assert message in str(err.value), (extra, str(err.value))


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_user_runs_the_job_as_that_user_when_root(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    result = asyncio.run(run_job(request("id -u; id -g; echo $HOME $USER", user="nobody",
                                         workdir="/"),
                                 log_path=tmp_path / "logs" / "j" / "o.1.log"))
    assert result.ok, result
    assert result.output_tail.split() == [str(nobody.pw_uid), str(nobody.pw_gid),
                                          nobody.pw_dir, "nobody"]
    # by uid too
    result = asyncio.run(run_job(request(("id", "-un"), user=str(nobody.pw_uid), workdir="/")))
    assert result.output_tail.strip() == "nobody"


def test_user_is_refused_when_not_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nobody = pwd.getpwnam("nobody")
    with pytest.raises(ExecutorError, match=r"no_such_user_x.*does not exist"):
        asyncio.run(run_job(request(("true",), user="no_such_user_x")))
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("jobs:\n  - name: a\n    schedule: '@every 5s'\n    command: id\n"
                    "    user: root\n")
    monkeypatch.setattr(os, "geteuid", lambda: nobody.pw_uid)
    with pytest.raises(ExecutorError, match="'root' needs a worker running as root"):
        asyncio.run(run_job(request(("true",), user="root")))
    out = CliRunner().invoke(app, ["validate", str(jobs)])
    assert out.exit_code == 2, out.output
    assert out.output.strip() == (
        f'Error: {jobs}:5:11: job "a": field "user": raftcron runs as "nobody", not root, so '
        "it cannot run a job as \"root\": run the agent as root, or remove 'user:'")
    # its own user is fine
    jobs.write_text(jobs.read_text().replace("user: root", "user: nobody"))
    assert CliRunner().invoke(app, ["validate", str(jobs)]).exit_code == 0


def test_log_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        log = tmp_path / "logs" / "j" / "o.1.log"
        result = asyncio.run(run_job(request("echo hi"), log_path=log))
    finally:
        os.umask(old)
    assert result.ok
    assert log.read_text() == "hi\n"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(log.parent.parent.stat().st_mode) == 0o700


def test_agent_secret_does_not_reach_the_job(procs: ProcessGroup) -> None:
    """As a user runs it: an agent started with a secret in its environment; the job dumps
    its environment into its log; the secret is not there and the log is private."""
    jobs = procs.workdir / "jobs.yaml"
    jobs.write_text("jobs:\n  - name: dump\n    schedule: '@every 2s'\n    command: [env]\n")
    cport, pport = free_port(), free_port()
    agent = procs.spawn("a1", [sys.executable, "-m", "scheduler.cli", "agent", "--name", "a1",
                               "--listen-client", f"127.0.0.1:{cport}",
                               "--listen-peer", f"127.0.0.1:{pport}", "--jobs", str(jobs)],
                        cport, env={"PYTHONPATH": str(REPO), "DB_PASSWORD": SECRET})
    logs = procs.workdir / "raftcron-logs" / "dump"

    def a_finished_log() -> Path | None:
        for p in sorted(logs.glob("*.log")) if logs.is_dir() else []:
            if "RAFTCRON_JOB=dump" in p.read_text():
                return p
        return None
    wait_until(lambda: a_finished_log() is not None or not agent.alive(), 60,
               "a run of the job\n" + agent.log()[-2000:])
    log = a_finished_log()
    assert log is not None, agent.log()[-3000:]
    text = log.read_text()
    assert SECRET not in text and "DB_PASSWORD" not in text
    assert f"PATH={os.environ['PATH']}" in text.splitlines()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    assert stat.S_IMODE(logs.parent.stat().st_mode) == 0o700
