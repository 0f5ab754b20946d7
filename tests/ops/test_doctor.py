"""``raftcron doctor`` against real processes: a healthy 3-agent cluster passes (exit 0);
a job whose tags match no worker, a worker reporting a skewed time, a job that keeps
failing (overdue), an unreadable --data-dir and a member killed with kill -9 are each
reported with what to do (exit 1); the same on a real etcd."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from coord.client import Client
from tests.helpers.procs import REPO, Proc, ProcessGroup, free_port, start_etcd, wait_until

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "scheduler.cli", *args]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=90,
                          check=False, env=ENV)


def doctor(endpoint: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    """(exit code, the JSON report, the table output) of the same checks."""
    as_json = run_cli("doctor", "--endpoints", endpoint, "-o", "json", *extra)
    assert "Traceback" not in as_json.stderr, as_json.stderr
    report = json.loads(as_json.stdout)
    table = run_cli("doctor", "--endpoints", endpoint, *extra)
    return as_json.returncode, report, table.stdout


def bad(report: dict[str, Any], check: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["level"] == "bad" and f["check"] == check]


async def _put_fake_worker(endpoint: str, name: str, started_at: float) -> None:
    async with Client(endpoint, timeout=5) as c:
        grant = await c.grant(60)
        await c.put(f"/cron/workers/{name}", json.dumps(
            {"host": "fake", "pid": 1, "tags": {}, "version": "0", "started_at": started_at}),
            lease=grant.id)


async def _delete(endpoint: str, key: str) -> None:
    async with Client(endpoint, timeout=5) as c:
        await c.delete(key)


def test_doctor_findings_on_a_cluster(procs: ProcessGroup) -> None:
    work = procs.workdir
    names = ["a1", "a2", "a3"]
    cports = {n: free_port() for n in names}
    pports = {n: free_port() for n in names}
    initial = ",".join(f"{n}=127.0.0.1:{pports[n]}" for n in names)
    agents: dict[str, Proc] = {}
    for n in names:
        agents[n] = procs.spawn(n, cli(
            "agent", "--name", n, "--data-dir", str(work / f"{n}-data"),
            "--listen-client", f"127.0.0.1:{cports[n]}", "--listen-peer",
            f"127.0.0.1:{pports[n]}", "--initial-cluster", initial, "--tags", "disk=hdd",
            "--log-dir", str(work / "logs" / n)), cports[n], env={"PYTHONPATH": str(REPO)})
    ep = f"127.0.0.1:{cports['a1']}"
    good = work / "good.yaml"
    good.write_text("jobs:\n  - name: tick\n    schedule: '@every 1s'\n"
                    "    command: ['true']\n")
    wait_until(lambda: run_cli("apply", "-f", str(good), "--endpoints", ep).returncode == 0,
               60, "the job file to be applied", step=1.0)

    # healthy: every check passes (the workers register and tick runs meanwhile)
    def healthy() -> bool:
        return doctor(ep)[0] == 0
    wait_until(healthy, 60, "a healthy report", step=1.0)
    code, report, table = doctor(ep, "--data-dir", str(work / "a1-data"))
    assert code == 0 and report["ok"], report
    checks = {f["check"] for f in report["findings"] if f["level"] == "ok"}
    assert {"quorum", "leader", "lag", "db_size", "disk", "workers", "clock_skew",
            "jobs"} <= checks, report
    assert "3 of 3 members answer" in table and table.rstrip().endswith("all good"), table

    # a job whose tags match no live worker
    ssd = work / "ssd.yaml"
    ssd.write_text("jobs:\n  - name: needs-ssd\n    schedule: '@every 1s'\n"
                   "    command: ['true']\n    tags: {disk: ssd}\n")
    assert run_cli("apply", "-f", str(ssd), "--endpoints", ep).returncode == 0
    code, report, table = doctor(ep)
    [f] = bad(report, "eligibility")
    assert code == 1 and "needs-ssd" in f["message"] and "disk=ssd" in f["message"], report
    assert "--tags" in f["fix"] and "BAD  eligibility  job needs-ssd" in table, table
    assert run_cli("jobs", "delete", "needs-ssd", "--endpoints", ep).returncode == 0

    # a worker whose reported time is 2 minutes ahead (its registration, faked)
    asyncio.run(_put_fake_worker(ep, "skewed", time.time() + 120))
    code, report, _ = doctor(ep)
    skew = bad(report, "clock_skew")
    assert code == 1 and any("skewed" in f["message"] and "ahead" in f["message"]
                             for f in skew), report
    assert "NTP" in skew[0]["fix"]
    asyncio.run(_delete(ep, "/cron/workers/skewed"))
    # ... and one 2 minutes behind: its registration lands after the others' writes (store
    # order) but reports an earlier time
    asyncio.run(_put_fake_worker(ep, "late", time.time() - 120))
    code, report, _ = doctor(ep)
    assert code == 1 and any("late" in f["message"] and "apart" in f["message"]
                             for f in bad(report, "clock_skew")), report
    asyncio.run(_delete(ep, "/cron/workers/late"))

    # a job that keeps failing: no success within 2 of its periods
    failing = work / "failing.yaml"
    failing.write_text("jobs:\n  - name: broken\n    schedule: '@every 1s'\n"
                       "    command: ['false']\n")
    assert run_cli("apply", "-f", str(failing), "--endpoints", ep).returncode == 0

    def overdue() -> bool:
        return bool(bad(doctor(ep, "--overdue-periods", "2")[1], "overdue"))
    wait_until(overdue, 60, "broken to be reported overdue", step=1.0)
    [f] = bad(doctor(ep, "--overdue-periods", "2")[1], "overdue")
    assert "broken" in f["message"] and "no success since" in f["message"], f
    assert run_cli("jobs", "delete", "broken", "--endpoints", ep).returncode == 0

    # a data dir that cannot be read
    code, report, _ = doctor(ep, "--data-dir", str(work / "missing"))
    assert code == 1 and bad(report, "disk"), report

    # a member killed: reported by name, quorum still held
    agents["a3"].kill9()
    code, report, table = doctor(ep)
    members = bad(report, "members")
    assert code == 1 and any("a3" in f["message"] and "does not answer" in f["message"]
                             for f in members), report
    assert any(f["check"] == "quorum" and f["level"] == "ok" and "2 of 3" in f["message"]
               for f in report["findings"]), report

    # quorum lost: still a report, not a traceback
    agents["a2"].kill9()
    code, report, _ = doctor(ep)
    assert code == 1 and (bad(report, "quorum") or bad(report, "members")), report


def test_doctor_on_real_etcd(procs: ProcessGroup) -> None:
    etcd = start_etcd(procs)
    jobs = procs.workdir / "jobs.yaml"
    jobs.write_text("jobs:\n  - name: tick\n    schedule: '@every 1s'\n"
                    "    command: ['true']\n")
    assert run_cli("apply", "-f", str(jobs), "--endpoints", etcd.endpoint).returncode == 0
    procs.spawn("w1", cli("worker", "--name", "w1", "--endpoints", etcd.endpoint,
                          "--log-dir", str(procs.workdir / "logs")), etcd.client_port,
                env={"PYTHONPATH": str(REPO)})
    wait_until(lambda: doctor(etcd.endpoint)[0] == 0, 60, "a healthy report on etcd",
               step=1.0)
    _, report, _ = doctor(etcd.endpoint)
    assert any(f["check"] == "leader" and f["level"] == "ok" for f in report["findings"])
    procs_stop = [f for f in report["findings"] if f["check"] == "workers"]
    assert procs_stop and "w1" in procs_stop[0]["message"], report
