"""Behind the TLS proxy the docs recommend (docs/api.md: "put it behind a TLS proxy"),
the browser's ``Origin`` is ``https://HOST`` while the dashboard itself sees plain HTTP:
its same-origin check must take that page's actions (with the CSRF token), and still
refuse every other origin. Against a real agent and dashboard process."""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import Dashboard
from tests.dashboard.security_helpers import Web

pytestmark = pytest.mark.timeout(120)


def test_actions_from_the_https_origin_of_a_tls_proxy(shared_dashboard: Dashboard) -> None:
    browser = Web(shared_dashboard.url)
    host = shared_dashboard.url.removeprefix("http://")
    token = browser.csrf()
    path = "/api/v1/jobs/nightly/suspend"
    for origin in ("https://evil.example", f"https://{host}.evil.example",
                   f"https://{host.split(':')[0]}:1", "null", f"ftp://{host}"):
        refused = browser.post(path, {"reason": "x"}, token=token, origin=origin)
        assert (refused.status, refused.code) == (403, "forbidden"), (origin, refused)
    ok = browser.post(path, {"reason": "via the proxy"}, token=token,
                      origin=f"https://{host}")
    assert ok.status == 200, ok
    ok = browser.post("/api/v1/jobs/nightly/resume", token=token,
                      headers={"Referer": f"https://{host}/jobs/nightly"}, origin=None)
    assert ok.status == 200, ok
    # Without the token it is still refused, whatever the origin.
    refused = browser.post(path, {"reason": "x"}, token=None, origin=f"https://{host}")
    assert (refused.status, refused.code) == (403, "forbidden"), refused
