"""Server-sent events (`GET /api/v1/events`) of `raftcron dashboard` on a real agent:
changes only, as they happen, filtered by topic and job (docs/api.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from tests.dashboard.conftest import Dashboard, cli
from tests.dashboard.sse import EventStream
from tests.helpers.procs import Proc, wait_until


@contextmanager
def stream(dashboard: Dashboard, query: str) -> Iterator[EventStream]:
    es = EventStream(f"{dashboard.url}/api/v1/events?{query}")
    try:
        assert es.status == 200
        assert es.headers["Content-Type"].startswith("text/event-stream")
        ready = es.wait_for("ready", 10)
        assert ready.data["ready"] is True
        yield es
    finally:
        es.close()


def test_a_held_lock_is_an_event_within_two_seconds(dashboard: Dashboard,
                                                    agent: Proc) -> None:
    with stream(dashboard, "topics=locks") as es:
        assert cli("jobs", "trigger", "slow", "--endpoints", agent.endpoint).returncode == 0
        msg = es.wait_for("lock", 15, job="slow", held=True)
        lock = msg.data
        assert (lock["worker"], lock["pid"]) == ("a1", agent.popen.pid)
        assert lock["fencing_token"] > 0 and lock["ttl_left"] > 0 and lock["occurrence"]
        # From the claim (the holder's start time) to the event in this browser's stream.
        lag = msg.at - datetime.fromisoformat(lock["since"]).timestamp()
        assert lag < 2.0, f"the lock event came {lag:.2f}s after the claim"
        assert cli("jobs", "kill", "slow", "--endpoints", agent.endpoint).returncode == 0
        es.wait_for("lock", 15, job="slow", held=False)


def test_only_changes_are_sent(dashboard: Dashboard, agent: Proc) -> None:
    wait_until(lambda: dashboard.get("/api/v1/jobs")[1].get("total") == 3, 20,
               "the agent's jobs applied", step=0.2)
    with stream(dashboard, "topics=jobs") as es:
        # Three jobs are stored and none changes: nothing is sent (no snapshot, no poll).
        assert es.during(3.0) == []
        done = cli("jobs", "suspend", "nightly", "--reason", "maintenance",
                   "--endpoints", agent.endpoint)
        assert done.returncode == 0, done.stderr
        msg = es.wait_for("job", 10, name="nightly")
        assert msg.data["suspended"] is True and msg.data["reason"] == "maintenance"
        # One change, one event: nothing else follows it.
        assert [m.event for m in es.during(2.0)] == []


def test_a_job_filter_sends_that_jobs_runs_only(dashboard: Dashboard) -> None:
    with stream(dashboard, "topics=runs&job=tick") as es:
        seen = [es.wait_for("run", 20, status="succeeded").data for _ in range(2)]
        seen += [m.data for m in es.during(2.0)]
        assert seen and {r["job"] for r in seen} == {"tick"}
        assert all(r["occurrence"] for r in seen)
    with stream(dashboard, "topics=runs&job=nightly") as es:
        assert [m.data for m in es.during(4.0)] == []  # tick ran meanwhile: not sent


def test_a_running_jobs_output_is_streamed(dashboard: Dashboard, agent: Proc) -> None:
    with stream(dashboard, "topics=output,runs&job=slow") as es:
        assert cli("jobs", "trigger", "slow", "--endpoints", agent.endpoint).returncode == 0
        out = es.wait_for("output", 15)
        assert out.data["job"] == "slow" and "started" in out.data["tail"]
        assert cli("jobs", "kill", "slow", "--endpoints", agent.endpoint).returncode == 0
        es.wait_for("run", 15, status="killed")
