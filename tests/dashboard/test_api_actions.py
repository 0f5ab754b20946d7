"""The dashboard's actions against a real agent (store without auth): each does what the
CLI command does, seen in the store through the CLI, with the CLI's audit record; bad input
and deleted jobs get clear JSON errors (docs/api.md, docs/dashboard-security.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dashboard.conftest import start_agent, start_dashboard
from tests.dashboard.security_helpers import Web, audit, cli, cli_json
from tests.helpers.procs import Proc, ProcessGroup, wait_until

pytestmark = pytest.mark.timeout(180)


def jobs_yaml(workdir: Path) -> str:
    pidfile = workdir / "sleeper.pid"
    return f"""\
jobs:
  - name: nightly
    schedule: '30 2 1 1 *'
    command: ['true']
  - name: sleeper
    schedule: '30 2 1 1 *'
    command: "echo $$ > {pidfile}; exec sleep 120"
  - name: doomed
    schedule: '30 2 1 1 *'
    command: ['true']
  - name: parked
    schedule: '30 2 1 1 *'
    command: ['true']
    suspend: true
"""


@pytest.fixture
def agent(procs: ProcessGroup) -> Proc:
    return start_agent(procs, "a1", jobs_yaml(procs.workdir))


@pytest.fixture
def web(procs: ProcessGroup, agent: Proc) -> Web:
    return Web(start_dashboard(procs, agent.endpoint).url)


def history(ep: str, job: str) -> list[dict[str, object]]:
    return list(cli_json(ep, "jobs", "history", job))


def test_trigger_runs_the_job_once_with_the_audit_record(web: Web, agent: Proc) -> None:
    ep = agent.endpoint
    reply = web.post("/api/v1/jobs/nightly/trigger", {})
    assert reply.status == 200, reply
    assert reply.body["ok"] is True and reply.body["job"] == "nightly"
    occ = reply.body["occurrence"]
    assert "-manual-" in occ

    def succeeded() -> bool:
        return any(r["occurrence"] == occ and r["status"] == "succeeded"
                   for r in history(ep, "nightly"))
    wait_until(succeeded, 60, "the triggered run recorded as succeeded", step=0.3)
    trail = cli_json(ep, "audit", "--job", "nightly")
    assert (trail[0]["who"], trail[0]["action"]) == ("anonymous", "trigger")
    # From where: the browser's address, through the dashboard process.
    assert trail[0]["host"] == "127.0.0.1" and trail[0]["os_user"] == "dashboard"
    # No body at all is the same as {}.
    again = web.post("/api/v1/jobs/nightly/trigger")
    assert again.status == 200, again


def test_suspend_with_a_reason_shows_in_the_cli_and_resume(web: Web, agent: Proc) -> None:
    ep = agent.endpoint
    reply = web.post("/api/v1/jobs/nightly/suspend", {"reason": "disk replacement"})
    assert reply.status == 200, reply
    assert reply.body == {"ok": True, "job": "nightly", "action": "suspend",
                          "suspended": True, "changed": True}
    shown = cli_json(ep, "jobs", "show", "nightly")
    assert shown["suspension"]["reason"] == "disk replacement"
    assert "disk replacement" in cli(ep, "jobs", "show", "nightly").stdout
    # Again: already suspended, the first reason kept (as the CLI).
    again = web.post("/api/v1/jobs/nightly/suspend", {"reason": "other"})
    assert again.status == 200 and again.body["changed"] is False
    assert cli_json(ep, "jobs", "show", "nightly")["suspension"]["reason"] == \
        "disk replacement"
    # An empty reason is allowed, as `raftcron jobs suspend` allows it.
    assert web.post("/api/v1/jobs/doomed/suspend", {}).status == 200
    resumed = web.post("/api/v1/jobs/nightly/resume", {})
    assert resumed.status == 200 and resumed.body["changed"] is True, resumed
    assert cli_json(ep, "jobs", "show", "nightly")["suspension"] is None
    assert web.post("/api/v1/jobs/nightly/resume").body["changed"] is False
    # A job its file suspends (`suspend: true`) is resumed by the file only, as by the CLI.
    parked = web.post("/api/v1/jobs/parked/resume")
    assert (parked.status, parked.code) == (409, "conflict"), parked
    assert "suspend: true" in parked.body["error"]["message"]
    # The agent's --jobs apply is not an audited client's: only the dashboard's actions.
    assert audit(ep, "nightly") == [("anonymous", "resume"), ("anonymous", "suspend")]


def test_kill_ends_the_running_process(web: Web, agent: Proc, procs: ProcessGroup) -> None:
    ep = agent.endpoint
    pidfile = procs.workdir / "sleeper.pid"
    assert web.post("/api/v1/jobs/sleeper/trigger").status == 200
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip().isdigit()
               and any(r["status"] == "running" for r in history(ep, "sleeper")),
               60, "the sleeper running", step=0.3)
    pid = int(pidfile.read_text())
    assert Path(f"/proc/{pid}").exists()
    # concurrency: forbid (the default): a second trigger while it runs starts nothing.
    busy = web.post("/api/v1/jobs/sleeper/trigger")
    assert (busy.status, busy.code) == (409, "conflict"), busy
    assert "forbid" in busy.body["error"]["message"]
    bad_occ = web.post("/api/v1/jobs/sleeper/kill", {"occurrence": "yesterday"})
    assert bad_occ.status == 400 and bad_occ.code == "bad_request", bad_occ
    reply = web.post("/api/v1/jobs/sleeper/kill", {})
    assert reply.status == 200, reply
    assert len(reply.body["killed"]) == 1

    def gone() -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(") ")[1].startswith("Z")  # reaped soon after
        except FileNotFoundError:
            return True
    wait_until(gone, 30, "the job's process to end")
    wait_until(lambda: history(ep, "sleeper")[0]["status"] == "killed", 30,
               "the run recorded as killed", step=0.3)
    nothing = web.post("/api/v1/jobs/sleeper/kill", {})
    assert nothing.status == 409 and nothing.code == "conflict", nothing
    assert "nothing to kill" in nothing.body["error"]["message"]
    assert audit(ep, "sleeper")[:2] == [("anonymous", "kill"), ("anonymous", "trigger")]


def test_bad_input_and_deleted_jobs_get_json_errors(web: Web, agent: Proc) -> None:
    ep = agent.endpoint
    cases = [
        ("/api/v1/jobs/no-such-job/trigger", {}, 404, "not_found"),
        ("/api/v1/jobs/no-such-job/suspend", {"reason": "x"}, 404, "not_found"),
        ("/api/v1/jobs/no-such-job/kill", {}, 404, "not_found"),
        ("/api/v1/jobs/..bad/trigger", {}, 400, "bad_request"),
        ("/api/v1/jobs/nightly/explode", {}, 404, "not_found"),
        ("/api/v1/jobs/nightly/trigger", {"now": True}, 400, "bad_request"),
        ("/api/v1/jobs/nightly/trigger", [1, 2], 400, "bad_request"),
        ("/api/v1/jobs/nightly/suspend", {"reason": 42}, 400, "bad_request"),
        ("/api/v1/jobs/nightly/suspend", {"reason": "x" * 1001}, 400, "bad_request"),
        ("/api/v1/jobs/nightly/kill", {"occurrence": 7}, 400, "bad_request"),
    ]
    for path, body, status, code in cases:
        reply = web.post(path, body)
        assert (reply.status, reply.code) == (status, code), (path, body, reply)
        assert isinstance(reply.body["error"]["message"], str)
        assert "\n" not in reply.body["error"]["message"]
    not_json = web.post("/api/v1/jobs/nightly/trigger", raw=b"{oops",
                        headers={"Content-Type": "application/json"})
    assert (not_json.status, not_json.code) == (400, "bad_request"), not_json
    form = web.post("/api/v1/jobs/nightly/trigger", raw=b"a=b",
                    headers={"Content-Type": "text/plain"})
    assert (form.status, form.code) == (400, "bad_request"), form
    # None of those did anything.
    assert history(ep, "nightly") == []
    assert cli_json(ep, "jobs", "show", "nightly")["suspension"] is None
    assert audit(ep, "nightly") == []

    # A job deleted since the page was loaded: its actions are 404, not a crash.
    assert cli(ep, "jobs", "delete", "doomed").returncode == 0
    for action in ("trigger", "suspend", "resume", "kill"):
        reply = web.post(f"/api/v1/jobs/doomed/{action}", {})
        assert (reply.status, reply.code) == (404, "not_found"), (action, reply)
        assert "doomed" in reply.body["error"]["message"]


def test_store_down_is_503(web: Web, agent: Proc) -> None:
    token = web.csrf()
    agent.kill9()
    reply = web.post("/api/v1/jobs/nightly/trigger", {}, token=token)
    assert (reply.status, reply.code) == (503, "unavailable"), reply
    assert "store" in reply.body["error"]["message"]
    # The dashboard itself stays up and answers the next request too.
    assert web.get("/api/v1/session").status == 200
