"""The read JSON API of `raftcron dashboard` against a real agent (docs/api.md): what each
endpoint answers, and clear JSON errors for what it cannot."""

from __future__ import annotations

from typing import Any

import pytest

from tests.dashboard.conftest import Dashboard, cli
from tests.helpers.procs import Proc, wait_until


def _succeeded_tick(dashboard: Dashboard) -> dict[str, Any] | None:
    status, body = dashboard.get("/api/v1/jobs?q=tick")
    assert status == 200, body
    last = body["jobs"][0]["last_run"] if body["jobs"] else None
    return last if last and last["outcome"] == "succeeded" else None


def test_cluster_shows_the_single_member_as_leader(shared_dashboard: Dashboard) -> None:
    status, body = shared_dashboard.get("/api/v1/cluster")
    assert status == 200, body
    assert [m["name"] for m in body["members"]] == ["a1"]
    assert body["healthy"] is True
    assert body["leader"] == body["members"][0]["id"]
    assert body["raft_term"] >= 1


def test_jobs_are_sorted_paged_and_filtered(dashboard: Dashboard) -> None:
    status, body = dashboard.get("/api/v1/jobs")
    assert status == 200, body
    assert [j["name"] for j in body["jobs"]] == ["nightly", "slow", "tick"]
    assert (body["total"], body["offset"], body["limit"]) == (3, 0, 50)
    nightly = body["jobs"][0]
    assert nightly["schedule"] == "30 2 1 1 *"
    assert nightly["timezone"] == "Europe/Berlin"
    assert nightly["concurrency"] == "forbid"
    assert nightly["suspended"] is False and nightly["reason"] is None
    assert nightly["next_fire"].endswith("-01-01T01:30:00+00:00")  # 02:30 CET
    assert nightly["last_run"] is None
    page = dashboard.get("/api/v1/jobs?offset=1&limit=1")[1]
    assert ([j["name"] for j in page["jobs"]], page["total"]) == (["slow"], 3)
    assert [j["name"] for j in dashboard.get("/api/v1/jobs?q=IGH")[1]["jobs"]] == ["nightly"]
    assert [j["name"] for j in dashboard.get("/api/v1/jobs?tag=team=core")[1]["jobs"]] == \
        ["tick"]
    assert dashboard.get("/api/v1/jobs?tag=team=other")[1]["total"] == 0
    never = dashboard.get("/api/v1/jobs?status=never")[1]
    assert {"nightly", "slow"} <= {j["name"] for j in never["jobs"]}
    # tick runs every 2 s: its last run shows, with its outcome and duration.
    wait_until(lambda: _succeeded_tick(dashboard) is not None, 30, "a succeeded tick run",
               step=0.3)
    last = _succeeded_tick(dashboard)
    assert last is not None and last["duration_s"] >= 0 and last["occurrence"]
    assert "tick" in [j["name"] for j in
                      dashboard.get("/api/v1/jobs?status=succeeded")[1]["jobs"]]


def test_suspension_shows_with_its_reason(dashboard: Dashboard, agent: Proc) -> None:
    done = cli("jobs", "suspend", "nightly", "--reason", "disk full",
               "--endpoints", agent.endpoint)
    assert done.returncode == 0, done.stderr

    def suspended() -> list[str]:
        return [j["name"] for j in dashboard.get("/api/v1/jobs?suspended=true")[1]["jobs"]]
    wait_until(lambda: suspended() == ["nightly"], 10, "nightly suspended", step=0.1)
    job = dashboard.get("/api/v1/jobs/nightly")[1]
    assert job["suspended"] is True and job["reason"] == "disk full"
    assert job["next_fire"] is None and len(job["next_fires"]) == 10
    assert [j["name"] for j in dashboard.get("/api/v1/jobs?suspended=false")[1]["jobs"]] \
        == ["slow", "tick"]


def test_one_job_has_its_spec_next_fires_and_runs(dashboard: Dashboard) -> None:
    wait_until(lambda: _succeeded_tick(dashboard) is not None, 30, "a succeeded tick run",
               step=0.3)
    status, job = dashboard.get("/api/v1/jobs/nightly")
    assert status == 200, job
    assert job["spec"]["command"] == ["true"] and job["deleted"] is False
    fires = job["next_fires"]
    assert len(fires) == 10 and all(set(f) >= {"at", "dst", "local"} for f in fires)
    assert all(f["local"][11:16] == "02:30" for f in fires)
    assert job["runs"] == [] and job["lock"] is None
    tick = dashboard.get("/api/v1/jobs/tick")[1]
    assert tick["runs"] and tick["runs"][0]["status"] in {"succeeded", "running", "claimed"}
    done = [r for r in tick["runs"] if r["status"] == "succeeded"]
    assert done[0]["attempts"][0]["exit_code"] == 0 and "tick" in done[0]["output_tail"]


def test_a_run_has_its_record_and_output(dashboard: Dashboard) -> None:
    wait_until(lambda: _succeeded_tick(dashboard) is not None, 30, "a succeeded tick run",
               step=0.3)
    occ = _succeeded_tick(dashboard)["occurrence"]  # type: ignore[index]
    status, run = dashboard.get(f"/api/v1/runs/tick/{occ}")
    assert status == 200, run
    assert (run["job"], run["occurrence"], run["status"]) == ("tick", occ, "succeeded")
    assert run["output"].strip() == f"tick {occ}"
    assert run["worker"] == "a1" and run["fencing_token"] > 0


def test_locks_workers_and_overview(dashboard: Dashboard, agent: Proc) -> None:
    status, body = dashboard.get("/api/v1/locks")
    assert status == 200 and set(body) == {"locks"}
    assert "slow" not in [lk["job"] for lk in body["locks"]]  # (tick's comes and goes)
    assert cli("jobs", "trigger", "slow", "--endpoints", agent.endpoint).returncode == 0

    def held() -> list[dict[str, Any]]:
        return [lk for lk in dashboard.get("/api/v1/locks")[1]["locks"] if lk["job"] == "slow"]
    wait_until(lambda: bool(held()), 15, "slow's lock", step=0.2)
    lock = held()[0]
    assert (lock["worker"], lock["pid"]) == ("a1", agent.popen.pid)
    assert lock["fencing_token"] > 0 and 0 < lock["ttl_left"] <= 10
    assert lock["occurrence"] and lock["since"] and lock["host"]
    workers = dashboard.get("/api/v1/workers")[1]["workers"]
    assert [(w["worker"], w["pid"]) for w in workers] == [("a1", agent.popen.pid)]
    wait_until(lambda: _succeeded_tick(dashboard) is not None, 30, "a succeeded tick run",
               step=0.3)
    overview = dashboard.get("/api/v1/overview")[1]
    assert overview["cluster"]["healthy"] is True and overview["workers_alive"] == 1
    assert overview["runs_last_hour"]["succeeded"] >= 1
    assert "slow" in [r["job"] for r in overview["running"]]
    assert overview["failing"] == [] and overview["overdue"] == []
    assert cli("jobs", "kill", "slow", "--endpoints", agent.endpoint).returncode == 0
    wait_until(lambda: not held(), 15, "slow's lock released", step=0.2)


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/api/v1/nope", 404, "not_found"),
    ("/api/v1/jobs/ghost", 404, "not_found"),
    ("/api/v1/jobs/..%2Fetc", 400, "bad_request"),
    ("/api/v1/jobs?limit=0", 400, "bad_request"),
    ("/api/v1/jobs?limit=501", 400, "bad_request"),
    ("/api/v1/jobs?limit=ten", 400, "bad_request"),
    ("/api/v1/jobs?offset=-1", 400, "bad_request"),
    ("/api/v1/jobs?suspended=maybe", 400, "bad_request"),
    ("/api/v1/jobs?status=great", 400, "bad_request"),
    ("/api/v1/runs/tick/yesterday", 400, "bad_request"),
    ("/api/v1/runs/tick/20200101T000000Z", 404, "not_found"),
    ("/api/v1/runs/ghost/20200101T000000Z", 404, "not_found"),
    ("/api/v1/events?topics=gossip", 400, "bad_request"),
])
def test_bad_requests_get_a_clear_json_error(shared_dashboard: Dashboard, path: str,
                                             status: int, code: str) -> None:
    got, body = shared_dashboard.get(path)
    assert got == status, body
    assert set(body) == {"error"} and body["error"]["code"] == code
    message = body["error"]["message"]
    assert message and "\n" not in message and "Traceback" not in message


def test_a_deleted_job_keeps_its_history_view(dashboard: Dashboard, agent: Proc) -> None:
    wait_until(lambda: _succeeded_tick(dashboard) is not None, 30, "a succeeded tick run",
               step=0.3)
    done = cli("jobs", "delete", "tick", "--endpoints", agent.endpoint)
    assert done.returncode == 0, done.stderr
    wait_until(lambda: dashboard.get("/api/v1/jobs")[1]["total"] == 2, 10,
               "tick gone from the list", step=0.1)
    status, job = dashboard.get("/api/v1/jobs/tick")
    assert status == 200, job
    assert job["deleted"] is True and job["spec"] is None and job["next_fires"] == []
    assert any(r["status"] == "succeeded" for r in job["runs"])
    assert dashboard.get("/api/v1/jobs/ghost")[0] == 404
