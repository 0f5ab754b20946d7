"""Bug injections: each breaks one promise on purpose, so a checker must catch it.

* ``no_lock_compare`` — the claim forgets ``create_revision(lock) == 0`` (forbid waits for
  nothing);
* ``skip_deadman`` — the deadman's kills do nothing (see ``Incarnation.skip_kill_prefix``);
* ``reuse_token`` — every run of a job gets the fencing token of its first claim;
* ``queue_forbid`` — a ``forbid`` occurrence due while the previous run runs waits for the
  lock instead of being recorded skipped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from scheduler.claim import Claim, ClaimStore
from scheduler.worker import decide

BUGS = ("no_lock_compare", "skip_deadman", "reuse_token", "queue_forbid")


@contextlib.contextmanager
def injected(bugs: frozenset[str]) -> Iterator[None]:
    unknown = set(bugs) - set(BUGS)
    if unknown:
        raise ValueError(f"unknown bugs {sorted(unknown)}")
    claim, when_busy = ClaimStore.claim, decide.when_busy
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

    try:
        if {"no_lock_compare", "reuse_token"} & bugs:
            ClaimStore.claim = claim_bug  # type: ignore[method-assign]
        if "queue_forbid" in bugs:
            decide.when_busy = busy_bug
        yield
    finally:
        ClaimStore.claim = claim  # type: ignore[method-assign]
        decide.when_busy = when_busy
