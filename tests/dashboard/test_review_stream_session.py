"""Under store auth an open event stream lives no longer than its session (issue 19's
hostile review): after a logout, or once the store revokes the user's role, the stream
ends — it no longer carries the store's changes to a browser that may not read them.
Against a real coord agent with auth on and a real dashboard process."""

from __future__ import annotations

import http.client
import queue
import threading
import time
from urllib.parse import urlsplit

import pytest

from tests.dashboard.security_helpers import ROOT_PW, Web, etcdctl, start_dashboard_as
from tests.dashboard.sse import EventStream
from tests.dashboard.test_dashboard_auth import secured_coord
from tests.helpers.procs import ProcessGroup

pytestmark = pytest.mark.timeout(240)


class CookieStream(EventStream):
    """An event stream sent with a browser's session cookie."""

    def __init__(self, url: str, cookie: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                               timeout=60)
        self.conn.request("GET", f"{parts.path}?{parts.query}", headers={
            "Accept": "text/event-stream", "Cookie": f"raftcron_session={cookie}"})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = dict(self.response.getheaders())
        self.messages = queue.Queue()
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()


def _stream_for(url: str, user: str) -> tuple[Web, CookieStream]:
    browser = Web(url)
    assert browser.login(user, f"{user}-pw").status == 200
    cookie = browser.cookie()
    assert cookie
    stream = CookieStream(url + "/api/v1/events?topics=locks,jobs", cookie)
    assert stream.status == 200
    stream.wait_for("ready", 30)
    return browser, stream


def _ends_within(stream: CookieStream, seconds: float) -> float:
    start = time.monotonic()
    assert stream.ended.wait(seconds), f"the stream still open {seconds} s after"
    return time.monotonic() - start


def test_stream_ends_with_its_session(procs: ProcessGroup, etcdctl_bin: str) -> None:
    ep = secured_coord(procs, etcdctl_bin)
    dash = start_dashboard_as(procs, ep, "dash:dash-pw")

    # Logout: the stream opened by that session ends (well before the 15 s keepalive).
    browser, stream = _stream_for(dash.url, "view")
    try:
        assert browser.post("/api/v1/logout").status == 200
        _ends_within(stream, 10)
    finally:
        stream.close()

    # A revoked role: ends at the session's next check (15 s after the last one).
    browser, stream = _stream_for(dash.url, "view")
    try:
        etcdctl(etcdctl_bin, ep, f"--user=root:{ROOT_PW}", "user", "revoke-role", "view",
                "raftcron-viewer")
        _ends_within(stream, 40)
        got = browser.get("/api/v1/locks")
        assert (got.status, got.code) == (401, "unauthenticated"), got
    finally:
        stream.close()
