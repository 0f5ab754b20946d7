"""The dashboard on a store with auth enabled (coord, and a real etcd): login against the
store's users, every action as the logged-in user so the store enforces raftcron's roles
(a viewer cannot act, an admin can, a user without a role cannot even log in), no access
without a session, logout, the session cookie's attributes, the audit trail naming the
user, and no password in the dashboard's log (docs/dashboard-security.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dashboard.security_helpers import (
    ROOT_PW,
    Web,
    audit,
    cli,
    cli_json,
    enable_auth,
    etcdctl,
    spawn_agent,
    start_dashboard_as,
)
from tests.helpers.procs import ProcessGroup, start_etcd, wait_until

pytestmark = pytest.mark.timeout(240)

JOBS = """\
jobs:
  - name: nightly
    schedule: '30 2 1 1 *'
    command: ['true']
"""
VIEW = "view:view-pw"


def secured_coord(procs: ProcessGroup, ctl: str) -> str:
    """An agent with :data:`JOBS`, auth enabled, then restarted with the worker role."""
    first, ep = spawn_agent(procs, "a1", JOBS)
    wait_until(lambda: "nightly" in cli(ep, "jobs", "list").stdout, 30, "the jobs applied")
    enable_auth(ctl, ep)
    assert first.terminate() == 0, first.log()
    spawn_agent(procs, "a1", None, "--user", "wkr:wkr-pw")
    return ep


def secured_etcd(procs: ProcessGroup, ctl: str, etcd_bin: str, tmp_path: Path) -> str:
    ep = start_etcd(procs, etcd_bin=etcd_bin).endpoint
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(JOBS)
    assert cli(ep, "apply", "-f", str(jobs)).returncode == 0
    enable_auth(ctl, ep)
    return ep


@pytest.fixture(params=["coord", "etcd"])
def store(request: pytest.FixtureRequest, procs: ProcessGroup, etcdctl_bin: str,
          etcd_bin: str, tmp_path: Path) -> str:
    if request.param == "coord":
        return secured_coord(procs, etcdctl_bin)
    return secured_etcd(procs, etcdctl_bin, etcd_bin, tmp_path)


def test_login_and_roles(store: str, procs: ProcessGroup, request: pytest.FixtureRequest
                         ) -> None:
    ep = store
    dash = start_dashboard_as(procs, ep, "dash:dash-pw")
    suspend = "/api/v1/jobs/nightly/suspend"
    trail = audit(ep, "nightly", user=VIEW)  # the setup's apply, on etcd

    # No session: no data, no action, the pages send to the login.
    anon = Web(dash.url)
    got = anon.get("/api/v1/cluster")
    assert (got.status, got.code) == (401, "unauthenticated"), got
    assert anon.get("/api/v1/session").body["auth"] is True
    page = anon.get("/jobs?tag=x")
    assert page.status == 303 and page.headers["Location"] == "/login?next=%2Fjobs%3Ftag%3Dx"
    refused = anon.post(suspend, {"reason": "anon"})
    assert (refused.status, refused.code) == (401, "unauthenticated"), refused

    # Wrong password, unknown user, a user without a raftcron role: refused.
    for user, password, status in (("adm", "wrong-pw", 401), ("ghost", "ghost-pw", 401),
                                   ("nobody", "nobody-pw", 403)):
        reply = Web(dash.url).login(user, password)
        assert reply.status == status, (user, reply)
        assert password not in str(reply.body)
    assert "wrong user name or password" in Web(dash.url).login("adm", "x").body["error"][
        "message"]

    # A viewer reads, and the store refuses its actions.
    viewer = Web(dash.url)
    reply = viewer.login("view", "view-pw")
    assert reply.status == 200 and reply.body["user"] == "view", reply
    cookie = reply.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback: the browser would drop it
    assert viewer.get("/api/v1/cluster").status == 200
    assert viewer.get("/api/v1/session").body["user"] == "view"
    # (A resume of a job not suspended, a kill of one not running write nothing, so the
    # store has nothing to refuse: they answer as for the CLI. The resume is tried below.)
    for action, body in (("trigger", {}), ("suspend", {"reason": "v"})):
        denied = viewer.post(f"/api/v1/jobs/nightly/{action}", body)
        assert (denied.status, denied.code) == (403, "forbidden"), (action, denied)
        assert "permission denied" in denied.body["error"]["message"]
    assert cli_json(ep, "jobs", "show", "nightly", user=VIEW)["suspension"] is None
    assert audit(ep, "nightly", user=VIEW) == trail

    # An admin acts, as itself: the CLI shows the reason, the audit trail the user.
    admin = Web(dash.url)
    assert admin.login("adm", "adm-pw").status == 200
    token = admin.csrf()
    assert token != viewer.csrf()
    ok = admin.post(suspend, {"reason": "disk replacement"}, token=token)
    assert ok.status == 200, ok
    shown = cli_json(ep, "jobs", "show", "nightly", user=VIEW)
    assert shown["suspension"]["reason"] == "disk replacement"
    denied = viewer.post("/api/v1/jobs/nightly/resume", {})
    assert (denied.status, denied.code) == (403, "forbidden"), denied
    assert cli_json(ep, "jobs", "show", "nightly", user=VIEW)["suspension"] is not None
    assert admin.post("/api/v1/jobs/nightly/resume", {}, token=token).status == 200
    # Under auth the session's token is still required, and the origin.
    assert admin.post(suspend, {"reason": "x"}, token=None).status == 403
    assert admin.post(suspend, {"reason": "x"}, token=token,
                      origin="http://evil.example").status == 403
    if request.node.callspec.params["store"] == "coord":
        trig = admin.post("/api/v1/jobs/nightly/trigger", {}, token=token)
        assert trig.status == 200, trig
        occ = trig.body["occurrence"]
        wait_until(lambda: any(r["occurrence"] == occ and r["status"] == "succeeded"
                               for r in cli_json(ep, "jobs", "history", "nightly",
                                                 user=VIEW)),
                   60, "the admin's trigger run by the worker", step=0.5)
        assert audit(ep, "nightly", user=VIEW)[0] == ("adm", "trigger")
    assert ("adm", "resume") in audit(ep, "nightly", user=VIEW)
    assert ("adm", "suspend") in audit(ep, "nightly", user=VIEW)

    # Logout ends the session: the cookie no longer opens anything.
    out = admin.post("/api/v1/logout", {}, token=token)
    assert out.status == 200, out
    stale = Web(dash.url)
    old_cookie = admin.cookie()
    assert old_cookie is None  # the browser was told to forget it
    again = admin.post(suspend, {"reason": "after logout"}, token=token)
    assert (again.status, again.code) == (401, "unauthenticated"), again
    assert stale.get("/api/v1/cluster").status == 401

    # The root password and the users' never reach the dashboard's log.
    log = dash.proc.log()
    assert "dashboard.login" in log and "dashboard.login_failed" in log
    for secret in (ROOT_PW, "adm-pw", "view-pw", "dash-pw", "wrong-pw", "ghost-pw"):
        assert secret not in log, secret


def test_a_revoked_role_ends_the_session(procs: ProcessGroup, etcdctl_bin: str) -> None:
    ep = secured_coord(procs, etcdctl_bin)
    dash = start_dashboard_as(procs, ep, "dash:dash-pw")
    viewer = Web(dash.url)
    assert viewer.login("view", "view-pw").status == 200
    assert viewer.get("/api/v1/cluster").status == 200
    etcdctl(etcdctl_bin, ep, f"--user=root:{ROOT_PW}", "user", "revoke-role", "view",
            "raftcron-viewer")
    # The session's user is asked again every 15 s whether it may still read /cron/.
    wait_until(lambda: viewer.get("/api/v1/cluster").status == 401, 40,
               "the session ended after the role was revoked", step=1.0)
