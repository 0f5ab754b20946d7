"""The dashboard's pages in a real headless Chromium against a real agent running jobs:
every page renders what the store holds, a held lock shows on Locks with its holder within
2 s and goes when released, a run's output shows while it runs, the job page marks DST
changes among its next fire times, and the jobs list pages and filters on the server.
Live changes arrive without a reload (the page's own marker survives them).

The screenshots in docs/dashboard/ are written here (tests/dashboard/browser.py).
"""

from __future__ import annotations

import socket
import sys
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from tests.dashboard.browser import Browser, browser, screenshot
from tests.dashboard.conftest import ENV
from tests.dashboard.site import Site, site
from tests.helpers.procs import wait_until

__all__ = ["browser", "site"]  # fixtures

LIVE = '#live[data-state="open"]'


def mark(page: object) -> None:
    """Set a marker a reload or a navigation would lose."""
    page.evaluate("window.__raftcron_marker = 42")  # type: ignore[attr-defined]


def still_marked(page: object) -> bool:
    return page.evaluate("window.__raftcron_marker") == 42  # type: ignore[attr-defined]


def cells(page: object, row: str) -> list[str]:
    return [c.strip() for c in page.locator(row).locator("td").all_inner_texts()]  # type: ignore[attr-defined]


def test_every_page_shows_the_store(site: Site, browser: Browser) -> None:
    page = browser.page()
    run = site.wait_run("tick")
    wait_until(lambda: any(r.status == "succeeded" for r in site.runs("tick")), 30,
               "a finished tick run", step=0.2)

    resp = page.goto(site.url + "/")
    assert resp is not None and resp.status == 200
    page.wait_for_selector(LIVE)
    assert page.locator("#cluster-health").inner_text() == "healthy"
    assert page.locator("#workers-alive").inner_text() == "1"
    screenshot(page, "overview")

    page.goto(site.url + "/jobs")
    names = page.locator("#jobs tbody tr").evaluate_all("rs => rs.map(r => r.dataset.key)")
    assert names == ["chatty", "hold", "markup", "monthly", "tick"]
    row = cells(page, '#jobs tr[data-key="monthly"]')
    assert row[:5] == ["monthly", "30 2 1 * *", "Europe/Berlin", "forbid", "team=reports"]
    # tick's latest run: finished, going, or claimed ahead of its instant (every 3 s).
    last = page.locator('#jobs tr[data-key="tick"] td').nth(7)
    assert last.locator(".badge").inner_text() in {"succeeded", "running", "claimed"}
    assert last.locator("a").inner_text().endswith("Z")
    screenshot(page, "jobs")

    page.goto(site.url + "/workers")
    row = cells(page, '#workers tr[data-key="a1"]')
    assert row[1:3] == [socket.gethostname(), str(site.agent.popen.pid)], row
    screenshot(page, "workers")

    page.goto(site.url + "/cluster")
    assert "a1" in page.locator("#members").inner_text()
    assert page.locator("#status tbody tr").count() == 1
    screenshot(page, "cluster")

    page.goto(f"{site.url}/runs/tick/{run.occurrence}")
    assert page.locator("#output").inner_text().strip() == f"tick {run.occurrence}"
    assert page.locator("h1").inner_text().startswith(f"Run of tick {run.occurrence}")


def test_a_held_lock_shows_on_locks_within_two_seconds(site: Site, browser: Browser) -> None:
    page = browser.page()
    assert site.lock("hold") is None
    page.goto(site.url + "/locks")
    page.wait_for_selector(LIVE)
    assert page.locator('#locks tr[data-key="hold"]').count() == 0
    mark(page)

    res = site.cli("jobs", "trigger", "hold")
    assert res.returncode == 0, res.stderr
    page.wait_for_selector('#locks tr[data-key="hold"]', timeout=30_000)
    seen = time.time()
    held = site.lock("hold")
    assert held is not None
    holder, token = held
    # The lock is taken by the claim (started_at); the page shows it, unreloaded, within 2 s.
    assert seen - holder.started_at <= 2.0, f"shown {seen - holder.started_at:.2f}s after"
    assert still_marked(page), "the page was reloaded"
    row = cells(page, '#locks tr[data-key="hold"]')
    assert row[:5] == ["hold", site.worker, socket.gethostname(), str(site.agent.popen.pid),
                       holder.occurrence], row
    assert row[7] == str(token)
    # TTL left counts down between events (the lease is renewed by keepalives meanwhile).
    ttl = page.locator('#locks tr[data-key="hold"] td[data-ttl]')
    first = int(ttl.inner_text().rstrip("s"))
    assert 0 < first <= 30
    wait_until(lambda: ttl.inner_text() != f"{first}s", 5, "the TTL to count down")
    screenshot(page, "locks")

    # Released (killed from the CLI): the row goes, live.
    assert site.cli("jobs", "kill", "hold").returncode == 0
    page.wait_for_selector('#locks tr[data-key="hold"]', state="detached", timeout=30_000)
    assert still_marked(page)


def test_a_runs_output_shows_while_it_runs(site: Site, browser: Browser) -> None:
    page = browser.page()
    res = site.cli("jobs", "trigger", "chatty")
    assert res.returncode == 0, res.stderr
    occurrence = res.stdout.split()[-1]  # "triggered chatty as occurrence <occ>"
    run = site.wait_run("chatty")
    assert run.occurrence == occurrence
    page.goto(f"{site.url}/runs/chatty/{run.occurrence}")
    page.wait_for_selector(LIVE)
    mark(page)
    # Lines arrive while the run goes on (status still running), then the final record.
    wait_until(lambda: "line 3" in page.locator("#output").inner_text()
               and page.locator("#run-status").get_attribute("data-status") == "running",
               20, "live output while it runs")
    screenshot(page, "run")
    page.wait_for_selector('#run-status[data-status="succeeded"]', timeout=30_000)
    out = page.locator("#output").inner_text()
    assert out.splitlines() == [f"line {i}" for i in range(1, 11)], out
    page.wait_for_selector("#attempts tbody tr .badge.succeeded")
    assert cells(page, "#attempts tbody tr")[5] == "0"  # the exit code
    assert still_marked(page)
    # ...and the job page lists it, with what the store recorded.
    page.goto(f"{site.url}/jobs/chatty")
    row = cells(page, f'#runs tr[data-key="{run.occurrence}"]')
    assert row[:3] == [run.occurrence, "succeeded", site.worker], row


def test_the_job_page_marks_dst_changes_in_its_next_fires(site: Site,
                                                         browser: Browser) -> None:
    page = browser.page()
    page.goto(site.url + "/jobs/monthly")
    rows = page.locator("#next-fires tbody tr")
    assert rows.count() == 10
    berlin = ZoneInfo("Europe/Berlin")
    offsets, marked = [], []
    for i in range(10):
        local, utc, note = (c.strip() for c in rows.nth(i).locator("td").all_inner_texts())
        at = datetime.strptime(utc, "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=ZoneInfo("UTC"))
        wall = at.astimezone(berlin)
        assert (wall.day, wall.hour, wall.minute) == (1, 2, 30), local
        assert local.startswith(wall.strftime("%Y-%m-%d 02:30:00 %Z")), local
        offsets.append(wall.utcoffset())
        marked.append(note == "DST change")
    now = datetime.now(berlin).utcoffset()
    expected = [o != p for o, p in zip(offsets, [now, *offsets], strict=False)]
    assert marked == expected and any(marked), (marked, offsets)
    screenshot(page, "job")


def test_the_jobs_list_pages_and_filters_on_the_server(site: Site, browser: Browser) -> None:
    page = browser.page()
    page.goto(site.url + "/jobs?limit=2")
    keys = lambda: page.locator("#jobs tbody tr").evaluate_all(  # noqa: E731
        "rs => rs.map(r => r.dataset.key)")
    assert keys() == ["chatty", "hold"]
    page.click("a[rel=next]")
    assert keys() == ["markup", "monthly"]
    assert "offset=2" in page.url
    page.click("a[rel=next]")
    assert keys() == ["tick"]
    assert "offset=4" in page.url and page.locator("a[rel=next]").count() == 0
    page.click("a[rel=prev]")
    page.click("a[rel=prev]")
    assert keys() == ["chatty", "hold"]

    page.goto(site.url + "/jobs")
    page.fill('input[name="q"]', "ON")
    page.click('form.filters button[type="submit"]')
    assert keys() == ["monthly"]
    page.goto(site.url + "/jobs?tag=team%3Dreports")
    assert keys() == ["monthly"]
    page.goto(site.url + "/jobs?status=never")
    assert "tick" not in keys()

    resp = page.goto(site.url + "/jobs?limit=0")
    assert resp is not None and resp.status == 400
    assert "limit" in page.locator(".message.error").inner_text()
    resp = page.goto(site.url + "/jobs/no-such-job")
    assert resp is not None and resp.status == 404
    assert "no-such-job" in page.locator(".message.error").inner_text()


def test_summaries_and_next_fires_follow_without_a_reload(site: Site, browser: Browser) -> None:
    """What no single row's event carries: the overview's counts (tick finishes a run every
    3 s) and a next fire time that has passed (the jobs page fetches itself again, once,
    not the job)."""
    page = browser.page()
    page.goto(site.url + "/")
    page.wait_for_selector(LIVE)
    mark(page)
    total = page.locator("#runs-last-hour .value")
    before = int(total.inner_text())
    wait_until(lambda: int(total.inner_text()) > before, 20, "the overview's run count")
    assert still_marked(page)

    page.goto(site.url + "/jobs")
    page.wait_for_selector(LIVE)
    mark(page)
    cell = page.locator('#jobs tr[data-key="tick"] td[data-next-fire]')
    first = cell.get_attribute("data-next-fire")
    wait_until(lambda: cell.get_attribute("data-next-fire") != first, 20,
               "tick's next fire to move on")
    assert cell.get_attribute("data-next-fire") > first  # type: ignore[operator]
    assert still_marked(page)


def test_workers_come_and_go_live(site: Site, browser: Browser) -> None:
    """A worker that starts shows on /workers with its lease TTL; killed with kill -9, it
    goes when its lease runs out — without a reload."""
    page = browser.page()
    page.goto(site.url + "/workers")
    page.wait_for_selector(LIVE)
    mark(page)
    w2 = site.group.spawn("w2", [sys.executable, "-m", "scheduler.cli", "worker",
                                 "--endpoints", site.endpoint, "--name", "w2"],
                          site.agent.client_port, env=ENV)
    page.wait_for_selector('#workers tr[data-key="w2"]', timeout=30_000)
    row = cells(page, '#workers tr[data-key="w2"]')
    assert row[2] == str(w2.popen.pid), row
    ttl = page.locator('#workers tr[data-key="w2"] td[data-ttl]')
    wait_until(lambda: ttl.inner_text().endswith("s"), 10, "w2's lease TTL")
    w2.kill9()
    page.wait_for_selector('#workers tr[data-key="w2"]', state="detached", timeout=45_000)
    assert page.locator('#workers tr[data-key="a1"]').count() == 1
    assert still_marked(page)


def test_markup_from_the_store_is_shown_as_text(site: Site, browser: Browser) -> None:
    """Whatever a job prints, an environment value or a suspension reason is text on every
    page, rendered by the server (autoescaped) or live by the script (textContent): no
    script of theirs runs, no image of theirs loads (a load would fail the test: x1...)."""
    page = browser.page()
    res = site.cli("jobs", "trigger", "markup")
    assert res.returncode == 0, res.stderr
    occurrence = res.stdout.split()[-1]
    wait_until(lambda: any(r.occurrence == occurrence and r.status == "succeeded"
                           for r in site.runs("markup")), 30, "the markup run")
    page.goto(f"{site.url}/runs/markup/{occurrence}")
    assert page.locator("#output").inner_text().strip() == (
        "<script>window.__xss=1</script><img src=x1 onerror=window.__xss=2>")
    assert page.locator("#output img, #output script").count() == 0

    page.goto(site.url + "/jobs/markup")
    page.wait_for_selector(LIVE)
    assert "NOTE=<img src=x3 onerror=window.__xss=3>" in page.locator("dl.spec").inner_text()
    reason = "<script>window.__xss=4</script><img src=x4 onerror=window.__xss=5>"
    assert site.cli("jobs", "suspend", "markup", "--reason", reason).returncode == 0
    page.wait_for_selector("#job-reason:not([hidden])")  # rendered live, by the script
    assert page.locator("#job-reason").inner_text().endswith(": " + reason)
    page.reload()  # rendered by the server
    assert page.locator("#job-reason").inner_text().endswith(": " + reason)
    assert page.locator("main img, main script").count() == 0
    assert page.evaluate("window.__xss") is None
    assert site.cli("jobs", "resume", "markup").returncode == 0


def test_a_page_catches_up_after_the_dashboard_is_killed(site: Site, browser: Browser) -> None:
    """Changes made while the dashboard was down (kill -9) show once it is back: the page's
    event stream reconnects by itself, sees a newer store revision than the page's, and
    fetches the page again in place — no reload, nothing typed lost."""
    page = browser.page()
    page.goto(site.url + "/jobs/hold")
    page.wait_for_selector(LIVE)
    page.fill('input[name="reason"]', "typed before the restart")
    mark(page)

    site.dashboard.proc.kill9()
    page.wait_for_selector('#live[data-state="error"]', timeout=10_000)
    res = site.cli("jobs", "trigger", "hold")
    assert res.returncode == 0, res.stderr
    occurrence = res.stdout.split()[-1]
    wait_until(lambda: site.lock("hold") is not None, 30, "hold to take its lock")
    site.restart_dashboard()

    page.wait_for_selector('#job-locks tr[data-key="hold"]', timeout=30_000)
    page.wait_for_selector(f'#runs tr[data-key="{occurrence}"] .badge.running')
    assert still_marked(page), "the page was reloaded"
    assert page.input_value('input[name="reason"]') == "typed before the restart"
    assert site.cli("jobs", "kill", "hold").returncode == 0
    page.wait_for_selector('#job-locks tr[data-key="hold"]', state="detached",
                           timeout=30_000)
