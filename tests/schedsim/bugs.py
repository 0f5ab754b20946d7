"""Bug injections: each breaks one promise on purpose, so a checker must catch it.

* ``no_lock_compare`` — the claim forgets ``create_revision(lock) == 0`` (forbid waits for
  nothing);
* ``skip_deadman`` — the deadman's kills do nothing (see ``Incarnation.skip_kill_prefix``);
* ``reuse_token`` — every run of a job gets the fencing token of its first claim;
* ``queue_forbid`` — a ``forbid`` occurrence due while the previous run runs waits for the
  lock instead of being recorded skipped;
* ``blind_apply`` — ``apply`` forgets its compare-and-set (the operators' txns carry no
  compares, ``operators._Tracking``): a concurrent apply is merged, not refused;
* ``stale_jobs`` — a running worker ignores deletions and edits of jobs it already has
  (their watch events), so it keeps firing the old spec until it restarts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from coord.client import WatchBatch
from scheduler import keys
from scheduler.claim import Claim, ClaimStore
from scheduler.worker import decide
from scheduler.worker.catalog import Catalog

BUGS = ("no_lock_compare", "skip_deadman", "reuse_token", "queue_forbid", "blind_apply",
        "stale_jobs")


@contextlib.contextmanager
def injected(bugs: frozenset[str]) -> Iterator[None]:
    unknown = set(bugs) - set(BUGS)
    if unknown:
        raise ValueError(f"unknown bugs {sorted(unknown)}")
    claim, when_busy, on_jobs = ClaimStore.claim, decide.when_busy, Catalog.on_job_batch
    first: dict[str, int] = {}

    async def claim_bug(self: ClaimStore, job: str, occurrence: str, *, exclusive: bool,
                        spec_revision: int = 0, **order: str | None) -> Claim | None:
        if "no_lock_compare" in bugs:
            exclusive = False
        got = await claim(self, job, occurrence, exclusive=exclusive,
                          spec_revision=spec_revision, **order)
        if got is not None and "reuse_token" in bugs:
            got.token = first.setdefault(job, got.token)
            got.record.fencing_token = got.token
        return got

    def busy_bug(concurrency: str, early: float, holder_known: bool) -> Any:
        if concurrency == "forbid" and early <= 0:
            return decide.Busy.WAIT
        return when_busy(concurrency, early, holder_known)

    async def jobs_bug(self: Catalog, batch: WatchBatch) -> None:
        known = [e for e in batch.events
                 if keys.job_from(e.kv.key, keys.JOBS) not in self.ctx.jobs]
        await on_jobs(self, WatchBatch(batch.revision, known))

    try:
        if "stale_jobs" in bugs:
            Catalog.on_job_batch = jobs_bug  # type: ignore[method-assign]
        if {"no_lock_compare", "reuse_token"} & bugs:
            ClaimStore.claim = claim_bug  # type: ignore[method-assign]
        if "queue_forbid" in bugs:
            decide.when_busy = busy_bug
        yield
    finally:
        ClaimStore.claim = claim  # type: ignore[method-assign]
        decide.when_busy = when_busy
        Catalog.on_job_batch = on_jobs  # type: ignore[method-assign]
