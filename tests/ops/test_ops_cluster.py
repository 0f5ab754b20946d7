"""Operations on a real 3-agent cluster (``--listen-metrics``): what a Prometheus server,
a load balancer's health probe and ``grpc_health_probe`` see.

Three agents start at once, each running two short jobs every 2 s (one succeeds, one
fails). Then:

* every member's ``/metrics`` parses with prometheus_client's parser and holds etcd's
  series with sane values: a leader known everywhere, exactly one leader, WAL fsyncs
  counted as writes arrive, the client RPCs counted by code;
* once the jobs are suspended, ``raftcron_runs_total`` summed over the agents equals, job
  by job and outcome by outcome, the run records ``raftcron jobs history`` lists;
* the README's alert rules name only series a scrape has;
* the gRPC health service says SERVING;
* after ``kill -9`` of two members the survivor's ``/health`` is 503 within a few seconds
  (and gRPC says NOT_SERVING); with them back it is 200 again.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from coord.client import Client, ClientError
from coord.pb import health_pb2, health_pb2_grpc
from tests.helpers.procs import REPO, Proc, ProcessGroup, free_port, process_group, wait_until
from tests.ops.scrape import get, names, scrape, total, try_get, value

NAMES = ("m1", "m2", "m3")
JOBS = """jobs:
  - name: ok
    schedule: "@every 2s"
    command: ["true"]
    history_limit: 500
  - name: bad
    schedule: "@every 2s"
    command: ["false"]
    history_limit: 500
"""
STORE_SERIES = (
    "etcd_server_has_leader", "etcd_server_is_leader", "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_committed_total", "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending", "etcd_server_proposals_failed_total",
    "etcd_disk_wal_fsync_duration_seconds_count", "etcd_mvcc_db_total_size_in_bytes",
    "etcd_debugging_mvcc_keys_total", "grpc_server_handled_total")
OUTCOME = {"succeeded": "success", "failed": "failure", "timeout": "timeout",
           "killed": "killed", "lost": "lost", "skipped": "skipped", "missed": "missed"}
START_TIMEOUT = 90.0
"""Seconds for three agents (Python processes on a shared 2-core machine) to start and
elect a leader."""


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "scheduler.cli", *args]


class Cluster:
    def __init__(self, group: ProcessGroup) -> None:
        self.group = group
        self.cports = {n: free_port() for n in NAMES}
        self.pports = {n: free_port() for n in NAMES}
        self.mports = {n: free_port() for n in NAMES}
        self.initial = ",".join(f"{n}=127.0.0.1:{self.pports[n]}" for n in NAMES)
        self.endpoints = ",".join(f"127.0.0.1:{self.cports[n]}" for n in NAMES)
        self.jobs = group.workdir / "jobs.yaml"
        self.jobs.write_text(JOBS)
        self.procs: dict[str, Proc] = {}

    def start(self, n: str) -> Proc:
        w = self.group.workdir
        p = self.group.spawn(n, cli(
            "agent", "--name", n, "--data-dir", str(w / f"{n}-data"),
            "--listen-client", f"127.0.0.1:{self.cports[n]}",
            "--listen-peer", f"127.0.0.1:{self.pports[n]}", "--initial-cluster", self.initial,
            "--jobs", str(self.jobs), "--log-dir", str(w / "logs" / n),
            "--listen-metrics", f"127.0.0.1:{self.mports[n]}"),
            self.cports[n], env={"PYTHONPATH": str(REPO)})
        self.procs[n] = p
        return p

    def healthy(self, n: str) -> bool:
        answer = try_get(self.mports[n], "/health")
        return answer is not None and answer.status == 200

    def wait_healthy(self, members: tuple[str, ...] = NAMES) -> None:
        for n in members:
            wait_until(lambda n=n: self.healthy(n) or not self.procs[n].alive(),  # type: ignore[misc]
                       START_TIMEOUT, f"{n}'s /health 200", step=0.2)
            assert self.procs[n].alive(), self.procs[n].log()

    def run(self, *args: str) -> str:
        out = subprocess.run(cli(*args, "--endpoints", self.endpoints), capture_output=True,
                             text=True, timeout=60, cwd=self.group.workdir, check=False,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        assert out.returncode == 0, out.stderr
        return out.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with process_group(tmp_path_factory.mktemp("ops")) as group:
        c = Cluster(group)
        for n in NAMES:  # all three at once, as hosts boot
            c.start(n)
        c.wait_healthy()
        yield c


def health_status(port: int, service: str = "") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(reply.status)


async def put_keys(endpoints: str, count: int) -> None:
    async with Client(endpoints.split(","), timeout=5) as c:
        for i in range(count):
            await c.put(f"/ops-test/{i}", "x")


def test_store_series(cluster: Cluster) -> None:
    scrapes = {n: scrape(cluster.mports[n]) for n in NAMES}
    for n, s in scrapes.items():
        missing = [m for m in STORE_SERIES if m not in names(s)]
        assert not missing, f"{n} lacks {missing}"
        assert value(s, "etcd_server_has_leader") == 1, n
        assert value(s, "etcd_server_leader_changes_seen_total") >= 1, n
        assert (0 < value(s, "etcd_server_proposals_applied_total")
                <= value(s, "etcd_server_proposals_committed_total")), n
        assert value(s, "etcd_mvcc_db_total_size_in_bytes") > 0, n
        assert value(s, "etcd_debugging_mvcc_keys_total") > 0, n
        assert value(s, "etcd_disk_wal_fsync_duration_seconds_bucket", le="8.192") == value(
            s, "etcd_disk_wal_fsync_duration_seconds_count"), "etcd's buckets end at 8.192 s"
    assert sum(value(s, "etcd_server_is_leader") for s in scrapes.values()) == 1

    before = {n: value(s, "etcd_disk_wal_fsync_duration_seconds_count")
              for n, s in scrapes.items()}
    puts = {n: total(s, "grpc_server_handled_total", grpc_method="Put", grpc_code="OK")
            for n, s in scrapes.items()}
    asyncio.run(put_keys(cluster.endpoints, 20))
    for n in NAMES:  # every member appends (and fsyncs) the new entries
        wait_until(lambda n=n: value(scrape(cluster.mports[n]),  # type: ignore[misc]
                                     "etcd_disk_wal_fsync_duration_seconds_count")
                   > before[n], 10, f"{n}'s fsync count to grow", step=0.2)
    after = {n: total(scrape(cluster.mports[n]), "grpc_server_handled_total",
                      grpc_method="Put", grpc_code="OK") for n in NAMES}
    assert sum(after.values()) - sum(puts.values()) >= 20
    s = scrape(cluster.mports["m1"])
    assert ("grpc_server_handled_total", (("grpc_code", "OK"), ("grpc_method", "Range"),
            ("grpc_service", "etcdserverpb.KV"), ("grpc_type", "unary"))) in s


def test_worker_series_and_readme_rules(cluster: Cluster) -> None:
    def union() -> set[str]:
        return set().union(*(names(scrape(cluster.mports[n])) for n in NAMES))

    wait_until(lambda: "raftcron_last_success_timestamp_seconds" in union(), 60,
               "a successful run", step=0.5)
    everything = union()
    for series in ("raftcron_fire_lag_seconds_count", "raftcron_claim_txns_total",
                   "raftcron_last_success_timestamp_seconds", "raftcron_running_runs",
                   "raftcron_workers_alive", "raftcron_session_lost_total",
                   "raftcron_deadman_kills_total", "raftcron_fencing_rejections_total",
                   "raftcron_next_fire_timestamp_seconds"):
        assert series in everything, series
    s = scrape(cluster.mports["m1"])
    assert value(s, "raftcron_workers_alive") == 3
    text = Path(REPO / "README.md").read_text()
    section = text[text.index("\n## Operating raftcron"):]
    section = section[:section.index("\n## ", 1)]
    rules = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    assert rules, "the README's Operating section has its alert rules"
    used = set(re.findall(r"\b((?:raftcron|etcd)_[a-z_]+)", "".join(rules)))
    assert used and used <= everything, used - everything


def test_runs_total_matches_run_records(cluster: Cluster) -> None:
    def runs(job: str) -> float:
        return sum(total(scrape(cluster.mports[n]), "raftcron_runs_total", cronjob=job)
                   for n in NAMES)

    for job in ("ok", "bad"):
        wait_until(lambda job=job: runs(job) >= 2, 60, f"two runs of {job}",  # type: ignore[misc]
                   step=0.5)
    for job in ("ok", "bad"):
        cluster.run("jobs", "suspend", job, "--reason", "test")

    def counts() -> tuple[dict[str, Counter[str]], dict[str, Counter[str]]]:
        metrics: dict[str, Counter[str]] = {"ok": Counter(), "bad": Counter()}
        for n in NAMES:
            s = scrape(cluster.mports[n])
            for (name, labels), v in s.items():
                d = dict(labels)
                if name == "raftcron_runs_total" and v:
                    metrics[d["cronjob"]][d["outcome"]] += int(v)
        records = {job: Counter(OUTCOME[r["status"]] for r in json.loads(
            cluster.run("jobs", "history", job, "-o", "json", "--limit", "500"))
            if r["status"] in OUTCOME) for job in ("ok", "bad")}
        return metrics, records

    # Runs in flight when the jobs were suspended finish; then both sides are final.
    seen: list[tuple[dict[str, Counter[str]], dict[str, Counter[str]]]] = []
    def settled() -> bool:
        seen.append(counts())
        return seen[-1][0] == seen[-1][1]

    wait_until(settled, 30, "runs_total to equal the run records", step=0.5)
    metrics, records = seen[-1]
    assert metrics["ok"]["success"] >= 2 and metrics["bad"]["failure"] >= 2, metrics
    assert records == metrics


def test_grpc_health_and_probes(cluster: Cluster) -> None:
    for n in NAMES:
        assert health_status(cluster.cports[n]) == health_pb2.HealthCheckResponse.SERVING
        assert get(cluster.mports[n], "/readyz").status == 200
        assert get(cluster.mports[n], "/livez").status == 200
        assert json.loads(get(cluster.mports[n], "/health").body) == {
            "health": "true", "reason": ""}
    with pytest.raises(grpc.RpcError) as err:
        health_status(cluster.cports["m1"], "no.such.Service")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_follows_quorum(cluster: Cluster) -> None:
    survivor, port = "m1", cluster.mports["m1"]
    for n in ("m2", "m3"):
        cluster.procs[n].kill9()
    t0 = time.monotonic()
    wait_until(lambda: get(port, "/health").status == 503, 15, "/health 503", step=0.1)
    took = time.monotonic() - t0
    body = json.loads(get(port, "/health").body)
    assert body["health"] == "false"
    assert body["reason"] == "RAFT NO LEADER" or body["reason"].startswith("QGET ERROR"), body
    assert took < 10, f"/health said 503 only {took:.1f}s after quorum was lost"
    wait_until(lambda: health_status(cluster.cports[survivor])
               == health_pb2.HealthCheckResponse.NOT_SERVING, 15, "gRPC NOT_SERVING")
    assert get(port, "/readyz").status == 503
    assert get(port, "/livez").status == 200
    assert value(scrape(port), "etcd_server_has_leader") == 0
    # A write to the survivor cannot commit: the proposal fails, and counts.
    with pytest.raises(ClientError):
        asyncio.run(put_keys(f"127.0.0.1:{cluster.cports[survivor]}", 1))
    s = scrape(port)
    assert value(s, "etcd_server_proposals_failed_total") >= 1
    assert total(s, "etcd_network_peer_sent_failures_total") >= 1
    for n in ("m2", "m3"):
        cluster.start(n)
    cluster.wait_healthy()
    assert health_status(cluster.cports[survivor]) == health_pb2.HealthCheckResponse.SERVING
