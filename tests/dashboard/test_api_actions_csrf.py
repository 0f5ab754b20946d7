"""Attacks on the dashboard's actions when the store has no auth (the case the issue names:
loopback only, and no actions from other origins): cross-origin POSTs, missing, wrong and
borrowed CSRF tokens, a DNS-rebound host name, a request from another host. Each is
refused with 403 and changes nothing; the same request from the dashboard's own page
works (docs/dashboard-security.md)."""

from __future__ import annotations

import socket
import sys

import pytest

from tests.dashboard.conftest import ENV, start_agent, start_dashboard
from tests.dashboard.security_helpers import Web, audit, cli_json
from tests.helpers.procs import Proc, ProcessGroup, free_port, wait_until

pytestmark = pytest.mark.timeout(120)

JOBS = """\
jobs:
  - name: nightly
    schedule: '30 2 * * *'
    command: ['true']
"""


@pytest.fixture
def agent(procs: ProcessGroup) -> Proc:
    return start_agent(procs, "a1", JOBS)


def unchanged(ep: str) -> None:
    assert cli_json(ep, "jobs", "show", "nightly")["suspension"] is None
    assert cli_json(ep, "jobs", "history", "nightly") == []
    assert audit(ep, "nightly") == []


def test_cross_site_and_tokenless_posts_are_refused(procs: ProcessGroup, agent: Proc) -> None:
    ep = agent.endpoint
    web = Web(start_dashboard(procs, ep).url)
    other = Web(web.url)  # another browser (its own cookie and token)
    token, other_token = web.csrf(), other.csrf()
    assert token != other_token
    path, body = "/api/v1/jobs/nightly/suspend", {"reason": "attack"}
    refused = {
        "another site's page": web.post(path, body, token=token,
                                        origin="http://evil.example"),
        "an opaque origin (sandboxed frame, file:)": web.post(path, body, token=token,
                                                               origin="null"),
        "the same host on another port": web.post(
            path, body, token=token, origin=f"http://127.0.0.1:{free_port()}"),
        "no Origin nor Referer": web.post(path, body, token=token, origin=None),
        "a Referer of another site": web.post(
            path, body, token=token, origin=None,
            headers={"Referer": "http://evil.example/dashboard"}),
        "no CSRF token": web.post(path, body, token=None),
        "a wrong CSRF token": web.post(path, body, token="0" * 64),
        "another browser's token": web.post(path, body, token=other_token),
        "a token without its cookie": Web(web.url).post(path, body, token=token),
        "the token in a form field to a JSON action, from another site": web.post(
            path, None, token=None, origin="http://evil.example",
            form={"csrf_token": token, "reason": "attack"}),
        "the trigger, cross-site": web.post("/api/v1/jobs/nightly/trigger", {},
                                            token=token, origin="http://evil.example"),
        "a logout, cross-site": web.post("/api/v1/logout", {}, token=token,
                                         origin="http://evil.example"),
    }
    for what, reply in refused.items():
        assert (reply.status, reply.code) == (403, "forbidden"), (what, reply)
    unchanged(ep)

    # The dashboard's own page: Origin (or only a same-origin Referer) and the token.
    ok = web.post(path, {"reason": "maintenance"}, token=token)
    assert ok.status == 200, ok
    ok = web.post("/api/v1/jobs/nightly/resume", {}, token=token, origin=None,
                  headers={"Referer": web.url + "/jobs/nightly"})
    assert ok.status == 200, ok
    assert audit(ep, "nightly") == [("anonymous", "resume"), ("anonymous", "suspend")]


def test_dns_rebinding_and_other_hosts_are_refused(procs: ProcessGroup, agent: Proc) -> None:
    """A page of evil.example whose name now points at 127.0.0.1 is same-origin to the
    browser (it could read the token); the dashboard answers no host name but loopback's,
    and, without store auth, nothing that arrives on a non-loopback address."""
    ep = agent.endpoint
    web = Web(start_dashboard(procs, ep).url)
    port = web.url.rsplit(":", 1)[1]
    evil = f"evil.example:{port}"
    got = web.get("/api/v1/session", headers={"Host": evil})
    assert (got.status, got.code) == (403, "forbidden"), got
    token = web.csrf()
    rebound = web.post("/api/v1/jobs/nightly/suspend", {"reason": "x"}, token=token,
                       origin=f"http://{evil}", headers={"Host": evil})
    assert (rebound.status, rebound.code) == (403, "forbidden"), rebound
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        assert web.get("/api/v1/session", headers={"Host": host}).status == 200, host
    unchanged(ep)

    # Served on every interface (--insecure-listen) with no store auth: a request that
    # comes in on a non-loopback address is refused.
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address to connect to")
    wide = free_port()
    proc = procs.spawn("dashboard-wide", [
        sys.executable, "-m", "scheduler.cli", "dashboard", "--endpoints", ep,
        "--listen", f"0.0.0.0:{wide}", "--insecure-listen"], wide, env=ENV)
    remote = Web(f"http://{address}:{wide}")
    wait_until(lambda: _answers(remote) or not proc.alive(), 30, "the wide dashboard")
    assert proc.alive(), proc.log()
    got = remote.get("/api/v1/session")
    assert (got.status, got.code) == (403, "forbidden"), got
    assert "loopback" in got.body["error"]["message"]
    local = Web(f"http://127.0.0.1:{wide}")
    assert local.get("/api/v1/session").status == 200


def _answers(web: Web) -> bool:
    try:
        web.get("/api/v1/session")
    except OSError:
        return False
    return True


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: picks the outgoing address
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address
