"""Parts of the read model's state (:mod:`.model`): the run index and the lease TTLs.

:class:`RunIndex` keeps every run record the store holds, slimmed (no output tail), by job
and occurrence, with each job's latest finished run and the runs in progress — kept
current one event at a time, never rebuilt per request. :class:`LeaseTTLs` answers "how
long is left on this lease" for many locks on one worker's session lease with one store
call a second, not one per lock.
"""

from __future__ import annotations

import time
from dataclasses import replace

from coord.client import Client, ClientError, KeyValue
from scheduler import keys
from scheduler.claim import ACTIVE, RunRecord
from scheduler.plan import occurrence_sort_key

TTL_FRESH = 1.0
"""Seconds a lease's TTL answer is reused (counted down meanwhile)."""


def run_record(kv: KeyValue) -> RunRecord | None:
    """The record at ``/cron/runs/<job>/<occurrence>``, or None if it is not a valid one
    (any client can write there) or names another run than its key."""
    where = keys.job_occurrence_from(kv.key, keys.RUNS)
    if where is None:
        return None
    try:
        rec = RunRecord.decode(kv.value)
    except (ValueError, TypeError):
        return None
    if (rec.job, rec.occurrence) != where:
        return None
    rec.fencing_token = rec.fencing_token or kv.create_revision
    return rec


def slim(rec: RunRecord) -> RunRecord:
    """The record without its output tail (up to 4 KiB: the bulk of a record)."""
    return replace(rec, output_tail="")


class RunIndex:
    def __init__(self) -> None:
        self.runs: dict[str, dict[str, RunRecord]] = {}
        """job -> occurrence -> slim record."""
        self.last: dict[str, RunRecord] = {}
        """job -> its latest finished run (by occurrence time)."""
        self.active: dict[tuple[str, str], RunRecord] = {}
        """(job, occurrence) -> its record while claimed, running or retrying (a claim made
        ahead of its instant included)."""

    def keep(self, rec: RunRecord) -> None:
        """Add or update a (slim) record."""
        self.runs.setdefault(rec.job, {})[rec.occurrence] = rec
        last = self.last.get(rec.job)
        if rec.status in ACTIVE:
            self.active[(rec.job, rec.occurrence)] = rec
            if last is not None and last.occurrence == rec.occurrence:
                self._recompute_last(rec.job)
            return
        self.active.pop((rec.job, rec.occurrence), None)
        if last is None or (occurrence_sort_key(rec.occurrence)
                            >= occurrence_sort_key(last.occurrence)):
            self.last[rec.job] = rec

    def drop(self, job: str, occurrence: str) -> None:
        per_job = self.runs.get(job, {})
        per_job.pop(occurrence, None)
        self.active.pop((job, occurrence), None)
        last = self.last.get(job)
        if last is not None and last.occurrence == occurrence:
            self._recompute_last(job)
        if not per_job:
            self.runs.pop(job, None)

    def _recompute_last(self, job: str) -> None:
        done = [r for r in self.runs.get(job, {}).values() if r.status not in ACTIVE]
        if done:
            self.last[job] = max(done, key=lambda r: occurrence_sort_key(r.occurrence))
        else:
            self.last.pop(job, None)


class LeaseTTLs:
    def __init__(self, client: Client) -> None:
        self.client = client
        self._known: dict[int, tuple[float, int]] = {}
        """lease -> (monotonic time asked, TTL answered)."""

    async def left(self, lease: int) -> int | None:
        """Seconds left on ``lease`` (-1: expired; None: no lease, or no answer)."""
        if not lease:
            return None
        now = time.monotonic()
        known = self._known.get(lease)
        if known is not None and now - known[0] < TTL_FRESH:
            return known[1] if known[1] < 0 else max(0, known[1] - int(now - known[0]))
        try:
            ttl = (await self.client.time_to_live(lease)).ttl
        except ClientError:
            return None
        if len(self._known) > 10_000:  # leases come and go with workers: forget old ones
            self._known.clear()
        self._known[lease] = (now, ttl)
        return ttl
