"""Hostile review of the dashboard (issue 19): what a page from another site, or a client
opening streams without end, can do to it — against a real agent and dashboard.

- Every answer forbids framing (clickjacking: a page of another site showing the job page
  in an invisible frame over its own buttons) and content sniffing.
- The number of open event streams is bounded: past the bound a new stream is refused
  with a JSON 503 at once, the open ones keep streaming, and a closed one frees its place.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import pytest

from tests.dashboard.conftest import Dashboard
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.timeout(180)

MAX_STREAMS = 256
"""Open event streams one dashboard serves at once (docs/api.md; live.MAX_STREAMS)."""


def _headers(url: str, path: str) -> dict[str, str]:
    import urllib.request
    with urllib.request.urlopen(url + path, timeout=10) as resp:
        return {k.lower(): v for k, v in resp.headers.items()}


def test_no_framing_no_sniffing(shared_dashboard: Dashboard) -> None:
    for path in ("/", "/jobs", "/jobs/nightly", "/locks", "/api/v1/overview",
                 "/static/dashboard.js", "/login"):
        got = _headers(shared_dashboard.url, path)
        assert got.get("x-frame-options") == "DENY", (path, got)
        assert "frame-ancestors 'none'" in got.get("content-security-policy", ""), (path, got)
        assert got.get("x-content-type-options") == "nosniff", (path, got)


def _open_stream(url: str) -> socket.socket:
    """An event stream on a raw socket (cheap: hundreds at once); its status line read."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.sendall(f"GET /api/v1/events?topics=locks HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    return sock


def _status(sock: socket.socket) -> tuple[int, bytes]:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return int(head.split(b" ", 2)[1]), head


def test_event_streams_are_bounded(shared_dashboard: Dashboard) -> None:
    url = shared_dashboard.url
    socks: list[socket.socket] = []
    try:
        for _ in range(MAX_STREAMS):
            sock = _open_stream(url)
            socks.append(sock)
            status, _ = _status(sock)
            assert status == 200
        start = time.monotonic()
        extra = _open_stream(url)
        status, head = _status(extra)
        body = extra.recv(4096) if b'"error"' not in head else b""
        extra.close()
        assert status == 503, head
        assert b"unavailable" in head + body and b"event streams" in head + body
        assert time.monotonic() - start < 10  # refused at once, not held open
        # The open ones still stream (a keepalive or an event arrives on the first).
        socks[0].settimeout(30)
        assert socks[0].recv(4096)
        # A closed stream frees its place.
        socks.pop().close()

        def another() -> bool:
            sock = _open_stream(url)
            status, _ = _status(sock)
            if status == 200:
                socks.append(sock)
                return True
            sock.close()
            return False
        wait_until(another, 20, "a stream accepted again after one closed")
    finally:
        for sock in socks:
            sock.close()
