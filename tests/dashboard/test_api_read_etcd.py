"""The dashboard on a real etcd (its store of record once a user outgrows coord): the same
API and events, through the same client (docs/migrate-to-etcd.md)."""

from __future__ import annotations

import sys

import pytest

from tests.dashboard.conftest import ENV, JOBS, cli, start_dashboard
from tests.dashboard.sse import EventStream
from tests.helpers.procs import ProcessGroup, start_etcd, wait_until

pytestmark = pytest.mark.etcd


def test_dashboard_on_a_real_etcd(procs: ProcessGroup, etcd_bin: str) -> None:
    etcd = start_etcd(procs, etcd_bin=etcd_bin)
    jobs = procs.workdir / "jobs.yaml"
    jobs.write_text(JOBS)
    done = cli("apply", "-f", str(jobs), "--endpoints", etcd.endpoint)
    assert done.returncode == 0, done.stderr
    dash = start_dashboard(procs, etcd.endpoint)
    wait_until(lambda: dash.get("/api/v1/jobs")[1].get("total") == 3, 30, "the jobs")
    cluster = dash.get("/api/v1/cluster")[1]
    assert cluster["healthy"] is True and [m["name"] for m in cluster["members"]] == ["etcd"]
    assert cluster["status"][0]["version"].startswith("3.")
    es = EventStream(f"{dash.url}/api/v1/events?topics=locks,runs,workers")
    try:
        es.wait_for("ready", 10)
        procs.spawn("worker", [sys.executable, "-m", "scheduler.cli", "worker",
                               "--endpoints", etcd.endpoint, "--name", "w1",
                               "--tags", "team=core",
                               "--log-dir", str(procs.workdir / "logs")], 0, env=ENV)
        es.wait_for("worker", 30, worker="w1", alive=True)
        es.wait_for("run", 30, job="tick", status="succeeded")
        assert cli("jobs", "trigger", "slow", "--endpoints", etcd.endpoint).returncode == 0
        lock = es.wait_for("lock", 15, job="slow", held=True).data
        assert lock["worker"] == "w1" and lock["ttl_left"] > 0
    finally:
        es.close()
    # slow holds its lock for a minute (tick's comes and goes every 2 s).
    assert "slow" in [lk["job"] for lk in dash.get("/api/v1/locks")[1]["locks"]]
    assert dash.get("/api/v1/overview")[1]["workers_alive"] == 1
