"""The dashboard's login under attack and as a browser form: a flood of wrong passwords
from one address is cut to a few store checks (429 with Retry-After) while logged-in users
and the store carry on; the ``/login`` form, its redirect (never to another site) and the
``/logout`` form (docs/dashboard-security.md)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.dashboard.security_helpers import Web, cli, start_dashboard_as
from tests.dashboard.test_dashboard_auth import VIEW, secured_coord
from tests.helpers.procs import ProcessGroup, wait_until

pytestmark = pytest.mark.timeout(180)

FLOOD = 60
"""Wrong-password logins sent, 8 at a time."""
BURST = 10
"""The limiter's burst (scheduler.dashboard.session.LoginLimiter)."""


def test_login_flood_is_limited_and_service_continues(procs: ProcessGroup,
                                                      etcdctl_bin: str) -> None:
    ep = secured_coord(procs, etcdctl_bin)
    dash = start_dashboard_as(procs, ep, "dash:dash-pw")
    viewer = Web(dash.url)
    assert viewer.login("view", "view-pw").status == 200

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda i: Web(dash.url).login("adm", f"guess-{i}"),
                                range(FLOOD)))
    took = time.monotonic() - started
    statuses = [r.status for r in replies]
    assert set(statuses) <= {401, 429}, statuses
    # Only the burst (and what refilled meanwhile, one per 5 s) reached the store.
    assert statuses.count(401) <= BURST + 1 + int(took / 5), (statuses, took)
    limited = [r for r in replies if r.status == 429]
    assert len(limited) >= FLOOD - BURST - 1 - int(took / 5)
    assert all(r.code == "rate_limited" and int(r.headers["Retry-After"]) >= 1
               for r in limited)
    assert took < 30, took

    # Meanwhile and after: the logged-in user, the store and the CLI carry on.
    assert viewer.get("/api/v1/cluster").status == 200
    assert cli(ep, "jobs", "list", user=VIEW).returncode == 0
    # The right password from the flooding address waits for the bucket, then works.
    wait = int(limited[-1].headers["Retry-After"])
    assert Web(dash.url).login("adm", "adm-pw").status == 429
    wait_until(lambda: Web(dash.url).login("adm", "adm-pw").status == 200, wait + 10,
               "a login once the bucket refilled", step=0.5)
    log = dash.proc.log()
    assert "dashboard.login_limited" in log
    assert "guess-" not in log and "adm-pw" not in log


def test_login_and_logout_forms(procs: ProcessGroup, etcdctl_bin: str) -> None:
    ep = secured_coord(procs, etcdctl_bin)
    dash = start_dashboard_as(procs, ep, "dash:dash-pw")
    browser = Web(dash.url)
    page = browser.get("/login?next=/jobs/nightly")
    assert page.status == 200 and "<form" in page.body
    assert 'name="csrf-token"' in page.body and 'value="/jobs/nightly"' in page.body

    wrong = browser.post("/login", None, token=None, form={
        "user": "adm", "password": "nope", "next": "/jobs/nightly"})
    assert wrong.status == 401 and "wrong user name or password" in wrong.body
    assert "nope" not in wrong.body
    # A login form posted from another site is refused (login CSRF).
    forged = browser.post("/login", None, token=None, origin="http://evil.example",
                          form={"user": "adm", "password": "adm-pw"})
    assert forged.status == 403

    ok = browser.post("/login", None, token=None, form={
        "user": "adm", "password": "adm-pw", "next": "/jobs/nightly"})
    assert ok.status == 303 and ok.headers["Location"] == "/jobs/nightly", ok
    assert browser.get("/api/v1/session").body["user"] == "adm"
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        other = Web(dash.url)
        reply = other.post("/login", None, token=None, form={
            "user": "view", "password": "view-pw", "next": target})
        assert reply.status == 303 and reply.headers["Location"] == "/", (target, reply)

    # The logout form carries the token in a field (a form cannot set headers).
    no_token = browser.post("/logout", None, token=None, form={})
    assert no_token.status == 403
    out = browser.post("/logout", None, token=None, form={"csrf_token": browser.csrf()})
    assert out.status == 303 and out.headers["Location"] == "/login", out
    assert browser.get("/api/v1/session").body["user"] is None
    assert browser.get("/api/v1/cluster").status == 401
