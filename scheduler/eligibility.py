"""Why no worker can run a job (pure: a job's tags and the live workers' tags in, text out).

A job with ``tags`` runs only on workers that have every one of them with the same value
(``plan.tags_match``). When none of the live workers does, the job silently never runs;
:func:`ineligible_reason` is the sentence ``jobs list``/``jobs show`` and the workers'
``job.no_eligible_worker`` warning show instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from scheduler.plan import eligible_workers


def format_tags(tags: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tags.items()))


def ineligible_reason(job_tags: Mapping[str, str],
                      workers: Mapping[str, Mapping[str, str]]) -> str | None:
    """None if a live worker (name → tags) may run a job with ``job_tags``, else why not:
    ``no eligible worker (tags disk=ssd match none of 3 workers)``."""
    if eligible_workers(job_tags, workers):
        return None
    n = len(workers)
    if n == 0:
        return "no eligible worker (no live workers)"
    noun = "worker" if n == 1 else "workers"
    return f"no eligible worker (tags {format_tags(job_tags)} match none of {n} {noun})"
