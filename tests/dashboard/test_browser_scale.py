"""The jobs page with 20,000 jobs, in a real headless Chromium: its first page renders in
under a second, measured in the browser from the start of the navigation to the moment the
table's first row is in the document (Navigation Timing's origin, ``performance.now()``
read once the row is there: an upper bound). The dashboard serves a slice of its in-memory
sorted jobs (docs/api.md), so later pages and a search cost the same.

Bounded: 20,000 jobs applied with ``raftcron apply`` (about 7 s here), each page measured
three times (the median must be under the second; each figure is printed), every wait with
a deadline.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard.browser import Browser, browser, screenshot
from tests.dashboard.conftest import Dashboard, start_dashboard
from tests.helpers.procs import REPO, process_group, start_coord, wait_until

__all__ = ["browser"]  # fixture

JOBS = 20_000
BUDGET_MS = 1000.0
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")


def big_file(path: Path) -> Path:
    with path.open("w") as f:
        f.write("jobs:\n")
        for i in range(JOBS):
            f.write(f"  - name: job-{i:05d}\n    schedule: '{i % 60} {i % 24} * * *'\n"
                    f"    timezone: {ZONES[i % len(ZONES)]}\n    command: ['true']\n"
                    f"    tags: {{shard: s{i % 16}}}\n")
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """A store (no worker: nothing runs) holding 20,000 jobs, and a dashboard on it."""
    work = Path(tmp_path_factory.mktemp("scale"))
    with process_group(work) as group:
        store = start_coord(group)
        res = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "apply", "-f", str(big_file(work / "big.yaml")),
             "--endpoints", store.endpoint],
            capture_output=True, text=True, timeout=180, check=False,
            env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        dash = start_dashboard(group, store.endpoint)

        def loaded() -> bool:
            status, body = dash.get("/api/v1/jobs?limit=1")
            return status == 200 and body["total"] == JOBS
        wait_until(loaded, 60, "the dashboard to hold the 20,000 jobs", step=0.5)
        yield dash


def first_row_ms(page: Any, url: str) -> tuple[float, float]:
    """Milliseconds from the navigation's start to the jobs table's first row, and of
    them until the server's first byte."""
    page.goto(url, wait_until="commit")
    page.wait_for_selector("#jobs tbody tr", timeout=10_000)
    row = float(page.evaluate("performance.now()"))
    ttfb = float(page.evaluate("performance.getEntriesByType('navigation')[0].responseStart"))
    return row, ttfb


@pytest.mark.slow
def test_the_jobs_page_renders_its_first_page_of_20000_jobs_within_a_second(
        big: Dashboard, browser: Browser) -> None:
    page = browser.page()
    page.goto(big.url + "/cluster")  # the browser's own start (a renderer) is not the page's
    cases = {
        "first page": (big.url + "/jobs", "job-00000"),
        "page 200": (big.url + "/jobs?offset=10000", "job-10000"),
        "a search": (big.url + "/jobs?q=job-1999", "job-19990"),
        "a tag filter": (big.url + "/jobs?tag=shard%3Ds3&limit=100", "job-00003"),
    }
    figures: dict[str, list[tuple[float, float]]] = {}
    for name, (url, first) in cases.items():
        for _ in range(3):
            figures.setdefault(name, []).append(first_row_ms(page, url))
            assert page.locator("#jobs tbody tr").first.get_attribute("data-key") == first
    report = "; ".join(
        f"{k}: " + ", ".join(f"{row:.0f} ms (server {ttfb:.0f})" for row, ttfb in v)
        for k, v in figures.items())
    sys.stderr.write(f"jobs page with {JOBS} jobs, navigation start to first row: {report}\n")
    for name, samples in figures.items():
        # The median of three: one sample slowed by the shared machine's other work does
        # not decide; a slow page does.
        ms = statistics.median(row for row, _ in samples)
        assert ms < BUDGET_MS, f"{name}: {ms:.0f} ms to its first row ({report})"
    page.goto(big.url + "/jobs")
    assert page.locator("#jobs-total").inner_text() == f"({JOBS})"
    assert page.locator("#jobs tbody tr").count() == 50
    screenshot(page, "jobs-20000")
