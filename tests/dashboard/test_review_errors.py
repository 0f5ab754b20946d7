"""Hostile review (issue 19): an error answer stays one short line however long the bad
input — a parameter, a job name or an occurrence id of thousands of characters is not
echoed back whole (into JSON, or into the HTML error page). Real agent and dashboard."""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import Dashboard

pytestmark = pytest.mark.timeout(120)

LONG = "9" * 5000
MAX_MESSAGE = 300
"""The longest error message (scheduler.dashboard.errors.MAX_MESSAGE)."""


def test_long_bad_input_is_not_echoed_whole(shared_dashboard: Dashboard) -> None:
    for path in (f"/api/v1/jobs?offset={LONG}", f"/api/v1/jobs?status=x{LONG}",
                 f"/api/v1/jobs?suspended={LONG}", f"/api/v1/runs/tick/{LONG}",
                 f"/api/v1/events?topics=x{LONG}"):
        status, body = shared_dashboard.get(path)
        assert status == 400, (path[:60], body)
        message = body["error"]["message"]
        assert len(message) <= MAX_MESSAGE and "\n" not in message, (path[:60], message)
    status, page = shared_dashboard.get(f"/jobs?offset={LONG}")
    assert status == 400 and LONG not in page and "offset must be" in page
