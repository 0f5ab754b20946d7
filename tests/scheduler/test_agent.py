"""``raftcron agent`` (a coord member and a worker in one process), as ``make run`` starts it.

What a user depends on: the agent runs the example jobs out of the box, shows who holds a
job while it runs, keeps their history, and a SIGTERM stops it cleanly — worker first
(locks released), then the member — with exit status 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from coord.client import Client, ClientError
from scheduler import keys
from scheduler.admin import history, workers
from tests.helpers.procs import REPO, Proc, ProcessGroup, free_port, wait_until

ENV = {"PYTHONPATH": str(REPO), "RAFTCRON_LOG_LEVEL": "info"}


def start_agent(procs: ProcessGroup, name: str, *extra: str) -> Proc:
    cport, pport = free_port(), free_port()
    argv = [sys.executable, "-m", "scheduler.cli", "agent", "--name", name,
            "--listen-client", f"127.0.0.1:{cport}", "--listen-peer", f"127.0.0.1:{pport}",
            *extra]
    return procs.spawn(name, argv, cport, env=ENV)


def query(endpoint: str, fn: Any) -> Any:
    async def body() -> Any:
        async with Client([endpoint], timeout=3) as c:
            return await fn(c)
    try:
        return asyncio.run(body())
    except ClientError:
        return None


def test_agent_runs_the_example_jobs(procs: ProcessGroup) -> None:
    agent = start_agent(procs, "a1", "--jobs", str(REPO / "jobs.example.yaml"))
    # The example's heartbeat fires every 5 s: a finished run shows in its history.
    wait_until(lambda: any(r.status == "succeeded" for r in
                           query(agent.endpoint, lambda c: history(c, "heartbeat")) or []),
               45, "a succeeded heartbeat run\n" + agent.log(), step=0.5)
    rows = query(agent.endpoint, workers)
    assert [(r["worker"], r["pid"]) for r in rows] == [("a1", agent.popen.pid)]
    log = agent.log()
    assert '"event": "run.started"' in log and '"event": "run.finished"' in log
    assert '"event": "agent.jobs_applied"' in log


def test_agent_stops_cleanly_on_sigterm(procs: ProcessGroup) -> None:
    out = procs.workdir / "runs.txt"
    jobs = procs.workdir / "jobs.yaml"
    jobs.write_text("jobs:\n  - name: tick\n    schedule: '@every 1s'\n"
                    f"    command: 'echo $RAFTCRON_OCCURRENCE >> {out}; sleep 0.3'\n")
    agent = start_agent(procs, "a2", "--jobs", str(jobs), "--data-dir", str(procs.workdir / "d2"))
    wait_until(lambda: out.exists() and out.read_text().count("\n") >= 3, 45,
               "the job to run\n" + agent.log(), step=0.2)
    agent.popen.send_signal(signal.SIGTERM)
    assert agent.popen.wait(timeout=60) == 0, agent.log()[-3000:]
    log = agent.log()
    assert log.index('"event": "worker.stopped"') < log.index('"event": "coord.stopped"')
    # The store alone, restarted on the same data dir: the stopped worker left no lock and
    # no registration behind (it revoked its session), and no occurrence ran twice.
    store = procs.spawn("store", [sys.executable, "-m", "scheduler.cli", "coord", "serve",
                                  "--name", "a2", "--data-dir", str(procs.workdir / "d2"),
                                  "--listen-client", agent.endpoint,
                                  "--listen-peer", f"127.0.0.1:{free_port()}"],
                        agent.client_port, env=ENV)
    wait_until(lambda: query(store.endpoint, lambda c: c.get("/cron/", prefix=True))
               is not None, 30, "the store to serve\n" + store.log(), step=0.2)
    left = query(store.endpoint, lambda c: c.get("/cron/", prefix=True))
    found = {kv.key.decode() for kv in left.kvs}
    assert "/cron/jobs/tick" in found
    assert not {k for k in found if k.startswith((keys.LOCKS, "/cron/workers/"))}, found
    lines = out.read_text().split()
    assert len(lines) == len(set(lines)), "an occurrence ran twice"
