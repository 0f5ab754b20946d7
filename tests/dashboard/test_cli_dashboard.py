"""`raftcron dashboard` and `agent --listen-http` as processes: where they listen, what
they refuse, how they stop, and what they answer while the store is down."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from tests.dashboard.conftest import ENV, Dashboard, cli, request, start_agent, start_dashboard
from tests.dashboard.security_helpers import Web
from tests.dashboard.sse import EventStream
from tests.helpers.procs import ProcessGroup, free_port, port_open, start_coord, wait_until


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_a_port_in_use_is_one_error_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("dashboard", "--endpoints", f"127.0.0.1:{free_port()}",
                   "--listen", f"127.0.0.1:{port}")
    assert done.returncode == 1
    line = _one_error_line(done.stderr)
    assert f"127.0.0.1:{port}" in line and "in use" in line


def test_other_hosts_are_refused_without_insecure_listen() -> None:
    done = cli("dashboard", "--listen", f"0.0.0.0:{free_port()}")
    assert done.returncode == 2
    assert "--insecure-listen" in _one_error_line(done.stderr)
    done = cli("agent", "--listen-http", f"0.0.0.0:{free_port()}")
    assert done.returncode == 2
    assert "--listen-http" in _one_error_line(done.stderr)
    done = cli("dashboard", "--listen", "no-port")
    assert done.returncode == 2
    assert "--listen" in _one_error_line(done.stderr)


def test_ctrl_c_stops_it_cleanly_with_streams_open(procs: ProcessGroup) -> None:
    agent = start_agent(procs, "a1", None)
    dash = start_dashboard(procs, agent.endpoint)
    wait_until(lambda: dash.get("/api/v1/locks")[0] == 200, 20, "the dashboard's model")
    streams = [EventStream(f"{dash.url}/api/v1/events") for _ in range(3)]
    try:
        for es in streams:
            es.wait_for("ready", 10)
        dash.proc.popen.send_signal(signal.SIGINT)
        assert dash.proc.popen.wait(timeout=20) == 0, dash.proc.log()
        for es in streams:
            assert es.ended.wait(10), "an event stream outlived the dashboard"
    finally:
        for es in streams:
            es.close()
    assert not port_open(dash.proc.client_port)
    assert "Traceback" not in dash.proc.log()


def test_the_store_down_is_a_503_and_it_recovers(procs: ProcessGroup) -> None:
    cport = free_port()
    dash = start_dashboard(procs, f"127.0.0.1:{cport}")
    status, body = dash.get("/api/v1/jobs", timeout=30)
    assert status == 503 and body["error"]["code"] == "unavailable", body
    status, body = dash.get("/api/v1/cluster", timeout=30)
    assert status == 503 and body["error"]["code"] == "unavailable", body
    # The store comes up on that address: the dashboard follows it, no restart.
    pport = free_port()
    procs.spawn("store", [sys.executable, "-m", "scheduler.cli", "coord", "serve",
                          "--name", "s1", "--data-dir", str(procs.workdir / "s1"),
                          "--listen-client", f"127.0.0.1:{cport}",
                          "--listen-peer", f"127.0.0.1:{pport}"], cport, env=ENV)
    wait_until(lambda: dash.get("/api/v1/jobs", timeout=30)[0] == 200, 60,
               "the dashboard to read the store", step=0.5)


def test_agent_listen_http_serves_the_dashboard(procs: ProcessGroup) -> None:
    port = free_port()
    agent = start_agent(procs, "a1", "jobs:\n  - {name: one, schedule: '@daily', "
                        "command: 'true'}\n", "--listen-http", f"127.0.0.1:{port}")
    dash = Dashboard(agent, f"http://127.0.0.1:{port}")
    wait_until(lambda: port_open(port), 30, "the agent's dashboard")
    wait_until(lambda: dash.get("/api/v1/jobs")[1].get("total") == 1, 30, "the job")
    workers = dash.get("/api/v1/workers")[1]["workers"]
    assert [w["worker"] for w in workers] == ["a1"]
    assert dash.get("/api/v1/cluster")[1]["healthy"] is True
    agent.popen.send_signal(signal.SIGTERM)
    assert agent.popen.wait(timeout=60) == 0, agent.log()[-3000:]
    assert not port_open(port)


def test_agent_listen_http_on_a_port_in_use_stops_with_one_line(procs: ProcessGroup) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent = start_agent(procs, "a1", None, "--listen-http", f"127.0.0.1:{port}")
        assert agent.popen.wait(timeout=60) == 1
    log = agent.log()
    assert f"Error: cannot serve the dashboard on 127.0.0.1:{port}" in log
    assert "Traceback" not in log


def test_a_wrong_method_is_a_json_405(dashboard: Dashboard) -> None:
    status, body = request(dashboard.url + "/api/v1/jobs", method="DELETE")
    assert status == 405 and body["error"]["code"] == "bad_request"


def test_on_a_store_with_auth_it_reads_as_its_user(procs: ProcessGroup,
                                                   etcdctl_bin: str) -> None:
    """The dashboard reads as the user it is started with (a viewer is enough); without
    one, every read answers 503 with the store's reason."""
    store = start_coord(procs)
    ctl = {**ENV, "ETCDCTL_API": "3", "ETCDCTL_ENDPOINTS": store.endpoint}

    def etcdctl(*args: str) -> None:
        r = subprocess.run([etcdctl_bin, *args], env={**os.environ, **ctl},
                           capture_output=True, text=True, timeout=30, check=False)
        assert r.returncode == 0, r.stderr
    etcdctl("user", "add", "root:ROOT-PW")
    assert cli("auth", "bootstrap", "--endpoints", store.endpoint).returncode == 0
    etcdctl("user", "add", "viewer:V-PW")
    etcdctl("user", "grant-role", "viewer", "raftcron-viewer")
    etcdctl("auth", "enable")
    viewer = start_dashboard(procs, store.endpoint, user="viewer:V-PW")
    web = Web(viewer.url)
    # Under store auth a browser logs in first (docs/dashboard-security.md); its reads then
    # come from the dashboard's model, read as the dashboard's own user.
    wait_until(lambda: web.get("/api/v1/jobs").status == 401, 30, "the viewer's dashboard")
    assert web.login("viewer", "V-PW").status == 200
    wait_until(lambda: web.get("/api/v1/jobs").status == 200, 30, "the viewer's reads")
    assert web.get("/api/v1/cluster").body["healthy"] is True
    nobody = start_dashboard(procs, store.endpoint)
    web = Web(nobody.url)
    assert web.login("viewer", "V-PW").status == 200
    reply = web.get("/api/v1/jobs")
    status, body = reply.status, reply.body
    assert status == 503 and body["error"]["code"] == "unavailable", body
    assert "user name" in body["error"]["message"] or "permission" in body["error"]["message"]
