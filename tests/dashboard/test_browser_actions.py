"""The job page's actions, clicked in a real headless Chromium against a real agent:
trigger starts a run that appears live, kill ends it, suspend records the reason typed,
resume lifts it — each checked in the store (and the CLI) as well as on the page, without a
reload. The buttons call ``POST /api/v1/jobs/<name>/<action>`` with the page's CSRF token
(docs/dashboard-security.md): a page served by another origin could not.
"""

from __future__ import annotations

import json

from scheduler import suspension
from tests.dashboard.browser import Browser, browser
from tests.dashboard.site import Site, site
from tests.helpers.procs import wait_until

__all__ = ["browser", "site"]  # fixtures

LIVE = '#live[data-state="open"]'


def test_trigger_kill_suspend_and_resume_from_the_job_page(site: Site,
                                                          browser: Browser) -> None:
    page = browser.page()
    page.goto(site.url + "/jobs/hold")
    page.wait_for_selector(LIVE)
    assert page.locator('meta[name="csrf-token"]').count() == 1
    page.evaluate("window.__raftcron_marker = 42")
    before = {r.occurrence for r in site.runs("hold")}

    # Trigger: the page says which occurrence; its run row and the lock appear live.
    page.click('button[data-action="trigger"]')
    page.wait_for_selector("#action-message.ok")
    message = page.locator("#action-message").inner_text()
    assert message.startswith("Triggered: occurrence "), message
    occurrence = message.removeprefix("Triggered: occurrence ").rstrip(".")
    assert occurrence not in before
    row = f'#runs tr[data-key="{occurrence}"]'
    page.wait_for_selector(f"{row} .badge.running", timeout=30_000)
    page.wait_for_selector('#job-locks tr[data-key="hold"]', timeout=10_000)
    held = site.lock("hold")
    assert held is not None and held[0].occurrence == occurrence
    run = next(r for r in site.runs("hold") if r.occurrence == occurrence)
    assert run.status == "running" and run.worker == site.worker

    # Kill asks first: dismissed, nothing is sent and the run goes on.
    asked: list[str] = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    page.click('button[data-action="kill"]')
    wait_until(lambda: bool(asked), 5, "the kill confirmation")
    assert asked == ["Kill the running run(s) of hold?"]
    assert page.locator("#action-message").inner_text() == message  # the trigger's still
    assert site.lock("hold") is not None

    # Kill, confirmed: the run ends killed (the store's record), the lock goes, live.
    page.once("dialog", lambda d: d.accept())
    page.click('button[data-action="kill"]')
    page.wait_for_selector("#action-message.ok")
    assert occurrence in page.locator("#action-message").inner_text()
    page.wait_for_selector(f"{row} .badge.killed", timeout=30_000)
    page.wait_for_selector('#job-locks tr[data-key="hold"]', state="detached",
                           timeout=30_000)
    assert next(r for r in site.runs("hold") if r.occurrence == occurrence).status == "killed"
    assert site.lock("hold") is None

    # Kill again: nothing runs, the page shows the API's one-line refusal.
    browser.expect_failure(409, "/api/v1/jobs/hold/kill")
    page.once("dialog", lambda d: d.accept())
    page.click('button[data-action="kill"]')
    page.wait_for_selector("#action-message.error")
    assert "nothing to kill" in page.locator("#action-message").inner_text()

    # Suspend with a reason: stored as the CLI would, shown on the page live.
    page.fill('input[name="reason"]', "disk replacement, back at 10:00")
    page.click('button[data-action="suspend"]')
    page.wait_for_selector("#action-message.ok")
    page.wait_for_selector("#job-state .badge.suspended")
    page.wait_for_selector("#job-reason:not([hidden])")
    assert page.locator("#job-reason").inner_text().endswith(
        ": disk replacement, back at 10:00")
    stored = site.store(lambda c: suspension.read_one(c, "hold"))
    assert stored is not None and stored.reason == "disk replacement, back at 10:00"
    shown = site.cli("jobs", "show", "hold", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["suspension"]["reason"] == "disk replacement, back at 10:00"

    # ...and the jobs list shows it suspended too.
    jobs = browser.page()
    jobs.goto(site.url + "/jobs?suspended=true")
    assert jobs.locator("#jobs tbody tr").evaluate_all(
        "rs => rs.map(r => r.dataset.key)") == ["hold"]
    jobs.close()

    # Resume: the suspension is gone from the store and from the page.
    page.click('button[data-action="resume"]')
    page.wait_for_selector("#action-message.ok")
    assert page.locator("#action-message").inner_text() == "Resumed."
    page.wait_for_selector("#job-state .badge.suspended", state="detached")
    assert page.locator("#job-reason").is_hidden()
    wait_until(lambda: site.store(lambda c: suspension.read_one(c, "hold")) is None, 5,
               "the suspension to be deleted")
    assert page.evaluate("window.__raftcron_marker") == 42, "the page was reloaded"
