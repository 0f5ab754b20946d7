"""The login in a real headless Chromium, on a store with auth: a page asked for without a
session leads to the login form and back; a viewer's click on trigger shows the store's
refusal; logout; an admin's suspend works and the audit trail names the admin
(docs/dashboard-security.md)."""

from __future__ import annotations

import pytest

from tests.dashboard.browser import Browser, browser
from tests.dashboard.security_helpers import audit, cli_json, start_dashboard_as
from tests.dashboard.test_dashboard_auth import VIEW, secured_coord
from tests.helpers.procs import ProcessGroup

__all__ = ["browser"]  # fixture

pytestmark = pytest.mark.timeout(180)


def test_login_form_roles_and_logout_in_chromium(procs: ProcessGroup, etcdctl_bin: str,
                                                 browser: Browser) -> None:
    ep = secured_coord(procs, etcdctl_bin)
    dash = start_dashboard_as(procs, ep, "dash:dash-pw")
    page = browser.page()
    page.goto(dash.url + "/jobs/nightly")
    assert page.url == dash.url + "/login?next=%2Fjobs%2Fnightly"

    page.fill('input[name="user"]', "view")
    page.fill('input[name="password"]', "wrong")
    page.click('button[type="submit"]')
    assert "wrong user name or password" in page.locator("p.error").inner_text()

    page.fill('input[name="password"]', "view-pw")
    page.click('button[type="submit"]')
    page.wait_for_url(dash.url + "/jobs/nightly")
    assert page.locator("form.user span").inner_text() == "view"
    browser.expect_failure(403, "/api/v1/jobs/nightly/trigger")
    page.click('button[data-action="trigger"]')
    page.wait_for_selector("#action-message.error")
    assert "permission denied" in page.locator("#action-message").inner_text()
    assert cli_json(ep, "jobs", "history", "nightly", user=VIEW) == []

    page.click('form.user button[type="submit"]')
    page.wait_for_url(dash.url + "/login")
    page.goto(dash.url + "/jobs/nightly")
    assert page.url.startswith(dash.url + "/login?next=")

    page.fill('input[name="user"]', "adm")
    page.fill('input[name="password"]', "adm-pw")
    page.click('button[type="submit"]')
    page.wait_for_url(dash.url + "/jobs/nightly")
    page.fill('input[name="reason"]', "disk replacement")
    page.click('button[data-action="suspend"]')
    page.wait_for_selector("#action-message.ok")
    shown = cli_json(ep, "jobs", "show", "nightly", user=VIEW)
    assert shown["suspension"]["reason"] == "disk replacement"
    assert audit(ep, "nightly", user=VIEW)[0] == ("adm", "suspend")
    # The session cookie is out of the page's reach (HttpOnly).
    assert "raftcron_session" not in page.evaluate("document.cookie")
