"""A real headless Chromium for the dashboard's page tests, driven by Playwright for Python.

The browser is Debian's ``chromium`` package (``/usr/bin/chromium``), never one Playwright
downloads: ``playwright install`` fetches from the network, which CI does not reach. Under
``CI=true`` (``.ci/run`` installs ``chromium``) a missing browser or Playwright FAILS the test;
elsewhere the test is skipped and the reason printed, as tests/helpers/binaries.py does for
etcd.

Every page a test opens is watched for uncaught JavaScript errors, console errors and
failed loads of its scripts, styles and API calls: a page whose script throws fails the
test at teardown even when what it asserted on happened to render. (The page itself may
answer 4xx: tests navigate to unknown jobs on purpose.)
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from tests.helpers.binaries import in_ci
from tests.helpers.procs import REPO

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    # Root in a container: Chromium's sandbox needs user namespaces it may not have.
    "--no-sandbox",
    "--disable-gpu",
    # The machine's network is closed: without these, Chromium's background connections
    # (updates, sync, QUIC probes) are refused many at a time and slow every start.
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO / "docs" / "dashboard"
"""Where ``make screenshots`` has the page tests write the screenshots docs/dashboard.md shows
(committed files). A plain ``make test`` takes them too but keeps them in memory, so a test
run leaves the checkout as it found it."""
WRITE_SCREENSHOTS = os.environ.get("RAFTCRON_SCREENSHOTS") == "1"


def _missing(reason: str) -> None:
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    sys.stderr.write(f"SKIP: {reason}\n")
    pytest.skip(reason)


def require_chromium() -> str:
    """The Chromium executable, or fail (CI) / skip (elsewhere) with what to install."""
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path is None:
        _missing("Chromium not found (/usr/bin/chromium); install the Debian package "
                 "chromium (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("Playwright for Python is not installed; run `make dev` (dev extras)")
    assert path is not None
    return path


@dataclass
class Browser:
    """One headless Chromium with a fresh profile; pages opened through it are watched."""

    context: BrowserContext
    errors: list[str] = field(default_factory=list)
    expected: set[tuple[int, str]] = field(default_factory=set)
    """(status, path) of failed loads a test provokes on purpose (an action refused)."""

    def expect_failure(self, status: int, path: str) -> None:
        self.expected.add((status, path))

    def page(self) -> Page:
        page = self.context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

        def console(msg: Any) -> None:
            # A failed load is reported (with its URL) by the response hook below; the page
            # a test navigated to may answer 4xx on purpose.
            if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
                self.errors.append(f"console.error: {msg.text}")

        def response(resp: Any) -> None:
            path = urlsplit(resp.url).path
            if (resp.status >= 400 and resp.request.resource_type != "document"
                    and (resp.status, path) not in self.expected):
                self.errors.append(f"{resp.status} for {resp.request.resource_type} "
                                   f"{resp.url}")

        page.on("console", console)
        page.on("response", response)
        return page


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    exe = require_chromium()
    from playwright.sync_api import sync_playwright

    profile = tmp_path / "chromium-profile"
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=exe, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 860}, timezone_id="UTC", locale="en-GB")
        context.set_default_timeout(15_000)
        b = Browser(context)
        try:
            yield b
        finally:
            context.close()
        assert not b.errors, "the pages reported JavaScript errors:\n" + "\n".join(b.errors)


def screenshot(page: Page, name: str) -> bytes:
    """The page as a PNG; saved as docs/dashboard/<name>.png under ``make screenshots``."""
    png = page.screenshot(full_page=False)
    assert png.startswith(b"\x89PNG"), f"{name}: not a PNG screenshot"
    if WRITE_SCREENSHOTS:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / f"{name}.png").write_bytes(png)
    return png
