"""Notifications and dead-man alerts, as a user runs them: a coord, real ``raftcron worker``
processes, a job file applied with ``raftcron apply``, and a webhook receiver on 127.0.0.1
in the test."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from coord.client import Client
from scheduler import keys
from scheduler.plan import parse_occurrence_id
from tests.helpers.procs import REPO, Proc, ProcessGroup, process_group, start_coord, wait_until

SESSION_TTL = 3


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "scheduler.cli", *args]


@dataclass
class Receiver:
    """A webhook receiver: records every request (headers, body, the status it answered);
    ``answer(n)`` gives the status of the n-th request (1-based)."""

    answer: Callable[[int], int] = lambda n: 200
    release: threading.Event = field(default_factory=threading.Event)
    """Requests to ``/hangs`` wait for it: a receiver that never answers."""
    hanging: int = 0
    got: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    def delivered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [g for g in self.got if g["status"] == 200]

    def all(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.got)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path.startswith("/hangs"):
                with rec.lock:
                    rec.hanging += 1
                rec.release.wait(60)
                return
            with rec.lock:
                status = rec.answer(len(rec.got) + 1)
                rec.got.append({"status": status, "headers": dict(self.headers), "raw": raw,
                                "body": json.loads(raw), "at": time.time()})
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        rec.release.set()
        server.shutdown()
        server.server_close()


def start_worker(group: ProcessGroup, name: str, endpoint: str) -> Proc:
    return group.spawn(name, cli("worker", "--endpoints", endpoint, "--name", name,
                                 "--session-ttl", str(SESSION_TTL),
                                 "--log-dir", str(group.workdir / "logs")),
                       0, env={"PYTHONPATH": str(REPO)})


def run_cli(group: ProcessGroup, endpoint: str, *args: str) -> str:
    res = subprocess.run(cli(*args, "--endpoints", endpoint), capture_output=True, text=True,
                         cwd=REPO, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def records(endpoint: str, job: str) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        async with Client([endpoint]) as c:
            res = await c.get(keys.runs_prefix(job), prefix=True)
            return [json.loads(kv.value) for kv in res.kvs]
    return asyncio.run(go())


def outbox(endpoint: str) -> list[str]:
    async def go() -> list[str]:
        async with Client([endpoint]) as c:
            res = await c.get("/cron/notify/", prefix=True, keys_only=True)
            return [kv.key.decode() for kv in res.kvs]
    return asyncio.run(go())


def setup(group: ProcessGroup, tmp: Path, jobs: str, workers: int) -> tuple[str, list[Proc]]:
    coord = start_coord(group)
    endpoint = coord.endpoint
    procs = [start_worker(group, f"w{i}", endpoint) for i in range(workers)]
    f = tmp / "jobs.yaml"
    f.write_text(jobs)
    run_cli(group, endpoint, "apply", "-f", str(f))
    return endpoint, procs


def test_failure_webhook_exactly_once_across_kill_9_of_the_runner(
        tmp_path: Path, receiver: Receiver) -> None:
    refusing = threading.Event()
    refusing.set()
    receiver.answer = lambda n: 500 if refusing.is_set() else 200
    jobs = f"""\
defaults:
  notify:
    - on: [failure]
      webhook: http://127.0.0.1:{receiver.port}/hook
jobs:
  - name: boom
    schedule: "@every 3s"
    command: [sh, -c, "echo going down; exit 3"]
"""
    with process_group(tmp_path) as group:
        endpoint, procs = setup(group, tmp_path, jobs, workers=2)
        # The first failure is recorded; its delivery is refused while we kill -9 the
        # worker that ran it (the other worker, or a successor claim, must deliver it).
        wait_until(lambda: any(r["status"] == "failed" for r in records(endpoint, "boom")),
                   60, "a failed run of boom")
        wait_until(lambda: len(receiver.all()) >= 1, 30, "a first (refused) try")
        first = next(r for r in records(endpoint, "boom") if r["status"] == "failed")
        runner = next(p for p in procs if p.name == first["worker"])
        runner.kill9()
        refusing.clear()
        # Three more failures after the kill, all delivered.
        wait_until(lambda: sum(r["status"] == "failed" for r in records(endpoint, "boom")) >= 4,
                   60, "four failed runs")
        run_cli(group, endpoint, "jobs", "suspend", "boom")
        wait_until(lambda: not outbox(endpoint)
                   and all(r["status"] not in ("claimed", "running", "retrying")
                           for r in records(endpoint, "boom")), 60, "the outbox to drain")
        failed = [r for r in records(endpoint, "boom") if r["status"] == "failed"]
        per_occurrence: dict[str, int] = {}
        for d in receiver.delivered():
            assert d["body"]["event"] == "failure" and d["body"]["job"] == "boom"
            per_occurrence[d["body"]["occurrence"]] = per_occurrence.get(
                d["body"]["occurrence"], 0) + 1
        assert per_occurrence == {r["occurrence"]: 1 for r in failed}
        body = next(d["body"] for d in receiver.delivered()
                    if d["body"]["occurrence"] == first["occurrence"])
        assert body["exit_code"] == 3 and body["status"] == "failed"
        assert body["run_id"] == first["run_id"] and body["worker"] == first["worker"]
        assert "going down" in body["output_tail"] and body["attempts"] == 1
        for r in failed:  # the result is in the run record
            (note,) = r["notifications"]
            assert note["result"] == "delivered" and note["event"] == "failure"
        # ... and the CLI shows it (history's `notified` column, show's last run).
        shown = json.loads(run_cli(group, endpoint, "jobs", "history", "boom", "-o", "json"))
        assert {r["occurrence"]: [n["result"] for n in r["notifications"]] for r in shown
                if r["status"] == "failed"} == {r["occurrence"]: ["delivered"] for r in failed}
        table = run_cli(group, endpoint, "jobs", "history", "boom")
        assert table.count("failure:delivered") == len(failed), table
        last = json.loads(run_cli(group, endpoint, "jobs", "show", "boom", "-o", "json"))
        assert last["last_run"]["status"] == "failed"  # every run failed, then suspended
        assert "notified           failure delivered (1 try)" in run_cli(
            group, endpoint, "jobs", "show", "boom")


def test_a_receiver_answering_500_twice_gets_the_signed_event_on_the_third_try(
        tmp_path: Path, receiver: Receiver) -> None:
    receiver.answer = lambda n: 500 if n <= 2 else 200
    jobs = f"""\
jobs:
  - name: once
    schedule: "@every 1h"
    command: [sh, -c, "exit 1"]
    notify:
      - on: [failure]
        webhook: http://127.0.0.1:{receiver.port}/signed
        secret: k3y
"""
    with process_group(tmp_path) as group:
        endpoint, _ = setup(group, tmp_path, jobs, workers=1)
        run_cli(group, endpoint, "jobs", "trigger", "once")
        wait_until(lambda: len(receiver.delivered()) >= 1 or len(receiver.all()) >= 6, 60,
                   "the webhook answered 200")
        tries = [g for g in receiver.all() if g["headers"].get("X-Raftcron-Event") == "failure"]
        assert [g["status"] for g in tries] == [500, 500, 200]
        assert len({g["raw"] for g in tries}) == 1  # the same event each time
        for g in tries:
            want = "sha256=" + hmac.new(b"k3y", g["raw"], hashlib.sha256).hexdigest()
            assert g["headers"]["X-Raftcron-Signature"] == want
        wait_until(lambda: any(r.get("notifications") for r in records(endpoint, "once")), 30,
                   "the result in the run record")
        (rec,) = records(endpoint, "once")
        assert rec["notifications"][0]["tries"] == 3
        assert rec["notifications"][0]["result"] == "delivered"


def test_a_dead_receiver_never_delays_the_next_run(tmp_path: Path, receiver: Receiver) -> None:
    """Every run of a 1-second job notifies a receiver that never answers and a port that
    refuses: the runs still start on time, one per second, while deliveries hang."""
    jobs = f"""\
jobs:
  - name: tick
    schedule: "@every 1s"
    command: "true"
    notify:
      - on: [success]
        webhook: http://127.0.0.1:{receiver.port}/hangs
      - on: [success]
        webhook: http://127.0.0.1:1/refused
"""
    with process_group(tmp_path) as group:
        endpoint, _ = setup(group, tmp_path, jobs, workers=1)
        wait_until(lambda: receiver.hanging >= 4, 60, "four deliveries hanging")
        t0 = time.time()
        wait_until(lambda: time.time() > t0 + 8, 20, "8 s of runs while deliveries hang")
        window = sorted((r for r in records(endpoint, "tick")
                         if t0 + 1 <= parse_occurrence_id(r["occurrence"]).timestamp() <= t0 + 7),
                        key=lambda r: r["occurrence"])
        assert len(window) >= 6, [r["occurrence"] for r in window]
        assert {r["status"] for r in window} <= {"succeeded", "running"}
        lags = [r["started_at"] - parse_occurrence_id(r["occurrence"]).timestamp()
                for r in window if r["started_at"]]
        assert max(lags) < 2.0, lags  # started on time, not behind a hanging delivery


def test_dead_man_overdue_once_recovered_once_command_target(tmp_path: Path) -> None:
    """A job that fails until a flag file exists, expected to succeed within 4 s: `overdue`
    once, then (flag created) `recovered` once, each seen by a notify command through its
    RAFTCRON_* environment; a restarted worker does not fire them again. Each event is one
    delivery id; the same id seen twice is the documented at-least-once redelivery, allowed
    only when a worker's session was lost (on a starved machine a 3 s lease can lapse)."""
    out, flag = tmp_path / "events.txt", tmp_path / "ok.flag"
    script = tmp_path / "page.sh"
    script.write_text('#!/bin/sh\necho "$RAFTCRON_EVENT $RAFTCRON_JOB $RAFTCRON_STATUS '
                      '$RAFTCRON_SUCCEED_WITHIN|$RAFTCRON_DELIVERY" >> ' + str(out) + "\n")
    script.chmod(0o755)
    jobs = f"""\
jobs:
  - name: nightly
    schedule: "@every 2s"
    command: [test, -e, "{flag}"]
    expect: {{succeed_within: 4s}}
    notify:
      - on: [overdue, recovered]
        command: ["{script}"]
"""

    def deliveries() -> list[tuple[str, str]]:
        lines = out.read_text().splitlines() if out.exists() else []
        return [(text, delivery) for text, _, delivery in (ln.partition("|") for ln in lines)]

    def events() -> list[str]:
        """One line per delivery id, in the order first seen."""
        seen: dict[str, str] = {}
        for text, delivery in deliveries():
            seen.setdefault(delivery, text)
        return list(seen.values())

    def redeliveries_explained(procs: list[Proc]) -> None:
        got = deliveries()
        ids = [d for _, d in got]
        assert all(ids), f"a command without RAFTCRON_DELIVERY: {got}"
        if len(set(ids)) != len(ids):
            lost = [p.name for p in procs if "worker.session_lost" in p.log_path.read_text()]
            assert lost, f"an event delivered twice with no session lost: {got}"

    with process_group(tmp_path) as group:
        endpoint, procs = setup(group, tmp_path, jobs, workers=2)
        wait_until(lambda: len(events()) >= 1, 60, "the overdue notification")
        assert events() == ["overdue nightly overdue 4"]
        flag.write_text("")
        wait_until(lambda: len(events()) >= 2, 60, "the recovered notification")
        assert events()[1] == "recovered nightly succeeded 4"
        # Restart a worker (once the delivery is settled: a worker killed between a
        # command's end and its settling txn would see it sent again, at least once);
        # keep both running through more successes than the window.
        wait_until(lambda: not outbox(endpoint), 30, "the outbox to drain")
        procs[0].kill9()
        w0b = start_worker(group, "w0b", endpoint)
        t0 = time.time()
        wait_until(lambda: time.time() > t0 + 10 or len(events()) > 2, 30, "10 s more")
        assert events() == ["overdue nightly overdue 4", "recovered nightly succeeded 4"]
        recovered = [r for r in records(endpoint, "nightly") if r.get("notifications")]
        assert [n["event"] for r in recovered for n in r["notifications"]] == ["recovered"]
        redeliveries_explained([*procs, w0b])
