"""Attacks on the dashboard's actions when the store has no auth (the case the issue names:
loopback only, and no actions from other origins): cross-origin POSTs, missing, wrong and
borrowed CSRF tokens, a DNS-rebound host name, a request from another host. Each is
refused with 403 and changes nothing; the same request from the dashboard's own page
works (docs/dashboard-security.md)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from scheduler.dashboard.guard import SECURITY, AuthProbe, Security, gate
from tests.dashboard.conftest import start_agent, start_dashboard
from tests.dashboard.security_helpers import Web, audit, cli_json
from tests.helpers.procs import Proc, ProcessGroup, free_port

pytestmark = pytest.mark.timeout(120)

JOBS = """\
jobs:
  - name: nightly
    schedule: '30 2 1 1 *'
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


def test_dns_rebinding_is_refused(procs: ProcessGroup, agent: Proc) -> None:
    """A page of evil.example whose name now points at 127.0.0.1 is same-origin to the
    browser (it could read the token); without store auth the dashboard answers no host
    name but loopback's."""
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


class _Probe(AuthProbe):
    def __init__(self, enabled: bool) -> None:  # no store: the answer is given
        self._enabled = enabled

    async def enabled(self) -> bool:
        return self._enabled


class _Transport:
    def __init__(self, local: str) -> None:
        self.local = local

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": (self.local, 8080), "peername": ("192.0.2.9", 5555)}.get(
            name, default)


@pytest.mark.parametrize(("auth", "local", "host", "reaches"), [
    (False, "192.0.2.2", "192.0.2.2:8080", False),  # another host, no store auth
    (False, "192.0.2.2", "127.0.0.1:8080", False),  # ... even naming loopback
    (False, "127.0.0.1", "127.0.0.1:8080", True),
    (False, "::1", "[::1]:8080", True),
    (True, "192.0.2.2", "dash.example:8080", True),  # with auth: on to the session check
])
def test_without_store_auth_only_loopback_connections(auth: bool, local: str, host: str,
                                                      reaches: bool) -> None:
    """A dashboard listening beyond loopback (`--insecure-listen`) on a store without
    auth answers a connection that arrived on a non-loopback address with 403. (In
    process, with the connection's local address given: tests bind loopback only.)"""
    app = web.Application()
    app[SECURITY] = Security(["127.0.0.1:1"], None, _Probe(auth))
    reached: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        reached.append(request.path)
        return web.json_response({})

    async def main() -> int:
        req = make_mocked_request("GET", "/api/v1/session", headers={"Host": host}, app=app,
                                  transport=_Transport(local))
        return (await gate(req, handler)).status
    status = asyncio.run(main())
    assert (status == 200 and reached == ["/api/v1/session"]) == reaches, (status, reached)
    if not reaches:
        assert status == 403
