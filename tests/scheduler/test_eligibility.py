"""``scheduler.eligibility``: the reason a job cannot run anywhere (issue 13, item 10)."""

from __future__ import annotations

from scheduler.eligibility import ineligible_reason


def test_reason_names_the_tags_and_the_worker_count() -> None:
    workers = {"w1": {"disk": "hdd"}, "w2": {}, "w3": {"zone": "a"}}
    assert ineligible_reason({"disk": "ssd"}, workers) == (
        "no eligible worker (tags disk=ssd match none of 3 workers)")
    assert ineligible_reason({"zone": "b", "disk": "ssd"}, {"w1": {}}) == (
        "no eligible worker (tags disk=ssd,zone=b match none of 1 worker)")


def test_eligible_jobs_have_no_reason() -> None:
    workers = {"w1": {"disk": "ssd", "zone": "a"}, "w2": {}}
    assert ineligible_reason({"disk": "ssd"}, workers) is None
    assert ineligible_reason({}, workers) is None
    assert ineligible_reason({}, {}) == "no eligible worker (no live workers)"
