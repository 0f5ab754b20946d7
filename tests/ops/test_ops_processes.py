"""``--listen-metrics`` on ``coord serve`` and on a ``worker`` of a real etcd, its flag
checks, and the listener under hostile clients."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.helpers.procs import REPO, ProcessGroup, free_port, start_etcd, wait_until
from tests.ops.scrape import get, names, scrape, total, try_get


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "scheduler.cli", *args]


ENV = {"PYTHONPATH": str(REPO)}


def wait_status(port: int, path: str, status: int, timeout: float = 60.0) -> None:
    def ok() -> bool:
        answer = try_get(port, path)
        return answer is not None and answer.status == status
    wait_until(ok, timeout, f"{path} {status} on :{port}", step=0.2)


@pytest.mark.parametrize("command", [["coord", "serve"], ["agent"], ["worker"]])
def test_listen_metrics_beyond_loopback_needs_insecure_listen(
        command: list[str], tmp_path: object) -> None:
    out = subprocess.run(cli(*command, "--listen-metrics", f"0.0.0.0:{free_port()}"),
                         capture_output=True, text=True, timeout=60, check=False,
                         cwd=str(tmp_path), env={**os.environ, **ENV})
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: refusing to serve plaintext on "
                                                   "--listen-metrics 0.0.0.0:"), out.stderr
    assert not list(tmp_path.iterdir()), "nothing was created"  # type: ignore[attr-defined]
    bad = subprocess.run(cli(*command, "--listen-metrics", "127.0.0.1"), capture_output=True,
                         text=True, timeout=60, check=False, cwd=str(tmp_path),
                         env={**os.environ, **ENV})
    assert bad.returncode == 2 and bad.stderr.startswith("Error: --listen-metrics: "), bad


def test_coord_serve_metrics(procs: ProcessGroup) -> None:
    cport, pport, mport = free_port(), free_port(), free_port()
    procs.spawn("n1", cli("coord", "serve", "--name", "n1", "--data-dir",
                          str(procs.workdir / "n1"), "--listen-client", f"127.0.0.1:{cport}",
                          "--listen-peer", f"127.0.0.1:{pport}",
                          "--listen-metrics", f"127.0.0.1:{mport}"), cport, env=ENV)
    wait_status(mport, "/health", 200)
    s = scrape(mport)
    assert s[("etcd_server_is_leader", ())] == 1
    assert not any(n.startswith("raftcron_") for n in names(s)), "a member runs no worker"
    assert s[("process_resident_memory_bytes", ())] > 0
    assert get(mport, "/readyz").status == 200


def test_worker_on_real_etcd_metrics(procs: ProcessGroup) -> None:
    etcd = start_etcd(procs)
    jobs = procs.workdir / "jobs.yaml"
    jobs.write_text('jobs:\n  - name: tick\n    schedule: "@every 1s"\n'
                    '    command: ["true"]\n')
    mport = free_port()
    applied = subprocess.run(cli("apply", "-f", str(jobs), "--endpoints", etcd.endpoint),
                             capture_output=True, text=True, timeout=60, check=False,
                             cwd=procs.workdir, env={**os.environ, **ENV})
    assert applied.returncode == 0, applied.stderr
    procs.spawn("w1", cli("worker", "--name", "w1", "--endpoints", etcd.endpoint,
                          "--log-dir", str(procs.workdir / "logs"),
                          "--listen-metrics", f"127.0.0.1:{mport}"), etcd.client_port,
                env=ENV)
    wait_status(mport, "/readyz", 200)
    assert json.loads(get(mport, "/health").body) == {"health": "true", "reason": ""}
    wait_until(lambda: total(scrape(mport), "raftcron_runs_total", cronjob="tick",
                             outcome="success") >= 2, 30, "two runs of tick", step=0.3)
    s = scrape(mport)
    assert not any(n.startswith("etcd_") for n in names(s)), "a worker has no member"
    assert s[("raftcron_workers_alive", ())] == 1


def test_listener_survives_floods_and_slow_clients(procs: ProcessGroup) -> None:
    """Silent connections, a request head far over the limit and garbage: each is cut off
    or answered with an error, within bounds, and /metrics still answers meanwhile."""
    cport, pport, mport = free_port(), free_port(), free_port()
    procs.spawn("n1", cli("coord", "serve", "--name", "n1", "--data-dir",
                          str(procs.workdir / "n1"), "--listen-client", f"127.0.0.1:{cport}",
                          "--listen-peer", f"127.0.0.1:{pport}",
                          "--listen-metrics", f"127.0.0.1:{mport}"), cport, env=ENV)
    wait_status(mport, "/health", 200)
    with socket.create_connection(("127.0.0.1", mport), timeout=10) as big:
        big.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20_000)
        try:
            head = big.recv(64)
        except ConnectionResetError:  # closed with the rest of the head unread: also fine
            head = b"HTTP/1.1 431 (reset)"
    assert head.startswith(b"HTTP/1.1 431") or head == b"", head
    with socket.create_connection(("127.0.0.1", mport), timeout=10) as junk:
        junk.sendall(b"\x16\x03\x01 not http\r\n\r\n")
        assert junk.recv(64).startswith(b"HTTP/1.1 400")
    # A flood of silent connections: beyond MAX_CONNECTIONS they are closed at once, the
    # others after HEAD_TIMEOUT; then the listener serves again.
    silent = [socket.create_connection(("127.0.0.1", mport)) for _ in range(200)]
    try:
        t0 = time.monotonic()
        wait_status(mport, "/metrics", 200, timeout=30)
        assert time.monotonic() - t0 < 20
    finally:
        for c in silent:
            c.close()
    assert get(mport, "/health").status == 200


def test_worker_not_ready_without_its_store(procs: ProcessGroup) -> None:
    """A worker whose store does not answer is live but not ready, and says why; it turns
    ready once the store is up."""
    mport, cport = free_port(), free_port()
    procs.spawn("w1", cli("worker", "--name", "w1", "--endpoints", f"127.0.0.1:{cport}",
                          "--log-dir", str(procs.workdir / "logs"),
                          "--listen-metrics", f"127.0.0.1:{mport}"), cport, env=ENV)
    wait_status(mport, "/livez", 200)
    ready = get(mport, "/readyz")
    assert ready.status == 503 and "worker session not open" in ready.body, ready
    health = json.loads(get(mport, "/health").body)
    assert health == {"health": "false", "reason": "worker session not open"}
    pport = free_port()
    procs.spawn("n1", cli("coord", "serve", "--name", "n1", "--data-dir",
                          str(procs.workdir / "n1"), "--listen-client", f"127.0.0.1:{cport}",
                          "--listen-peer", f"127.0.0.1:{pport}"), cport, env=ENV)
    wait_status(mport, "/readyz", 200)


def test_last_success_survives_a_worker_restart(procs: ProcessGroup) -> None:
    """A restarted worker learns each job's latest success from the run records, so the
    overdue alert keeps counting from it (here the job is suspended meanwhile: no run
    after the restart could tell it)."""
    etcd = start_etcd(procs)
    jobs = procs.workdir / "jobs.yaml"
    jobs.write_text('jobs:\n  - name: tick\n    schedule: "@every 1s"\n'
                    '    command: ["true"]\n')

    def run_cli(*args: str) -> None:
        out = subprocess.run(cli(*args, "--endpoints", etcd.endpoint), capture_output=True,
                             text=True, timeout=60, check=False, cwd=procs.workdir,
                             env={**os.environ, **ENV})
        assert out.returncode == 0, out.stderr

    def last_success(port: int) -> float | None:
        return scrape(port).get(("raftcron_last_success_timestamp_seconds",
                                 (("cronjob", "tick"),)))

    def start_worker(port: int) -> object:
        return procs.spawn("w1", cli("worker", "--name", "w1", "--endpoints", etcd.endpoint,
                                     "--log-dir", str(procs.workdir / "logs"),
                                     "--listen-metrics", f"127.0.0.1:{port}"),
                           etcd.client_port, env=ENV)

    run_cli("apply", "-f", str(jobs))
    first, second = free_port(), free_port()
    worker = start_worker(first)
    wait_status(first, "/readyz", 200)
    wait_until(lambda: last_success(first) is not None, 30, "a success", step=0.3)
    run_cli("jobs", "suspend", "tick")
    before = last_success(first)
    worker.terminate()  # type: ignore[attr-defined]
    start_worker(second)
    wait_status(second, "/readyz", 200)
    wait_until(lambda: last_success(second) is not None, 30, "the success learnt", step=0.3)
    after = last_success(second)
    assert before is not None and after is not None and after >= before, (before, after)
    assert after <= time.time()
