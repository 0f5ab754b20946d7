"""``jobs resume`` records the last occurrence due while the job was suspended (issue 20,
F2's edges: tests/schedsim/FINDINGS.md).

The record is written by the resume's own txn, so it is there even when no worker is up
at the resume (before, only a live worker seeing the resume wrote it, and the first worker
to start later replayed that occurrence), and it is bounded by the resuming client's clock
(the one that set the suspension's time), not by a worker's, which may run ahead (seed 658
recorded ``skipped`` an occurrence due after the resume). Against a real in-process coord
member, as ``test_claim.py``; no worker runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from coord.client import Client
from scheduler import keys, suspension
from scheduler.claim import ClaimStore, RunRecord
from scheduler.plan import occurrence_id
from scheduler.spec import spec_from_json
from tests.scheduler.test_claim import _run

J = "job"
SPEC = spec_from_json(json.dumps({"name": J, "schedule": "@every 10s", "command": "true"}))


async def _suspend_at(c: Client, at: float) -> None:
    """A suspension set ``at`` (Unix seconds), as ``jobs suspend`` writes it."""
    rec = suspension.Suspension(by="op@host", at=at, reason="maintenance")
    await c.put(keys.suspend_key(J), rec.encode())


async def _records(c: Client) -> dict[str, RunRecord]:
    r = await c.get(keys.runs_prefix(J), prefix=True)
    recs = [RunRecord.decode(kv.value) for kv in r.kvs]
    return {rec.occurrence: rec for rec in recs}


def test_resume_records_the_last_suspended_occurrence_with_no_worker_up(
        tmp_path: Path) -> None:
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        job = await c.put(keys.job_key(J), SPEC.to_json())
        at = time.time() - 35  # three or four occurrences due while suspended
        await _suspend_at(c, at)
        before = time.time()
        assert await suspension.resume(c, J)
        after = time.time()
        assert await c.get_one(keys.suspend_key(J)) is None
        recs = await _records(c)
        assert len(recs) == 1, recs
        (occ, rec), = recs.items()
        def last_due(upto: float) -> str:
            return occurrence_id(SPEC.timetable().between(
                datetime.fromtimestamp(at, UTC), datetime.fromtimestamp(upto, UTC))[-1])
        assert occ in {last_due(before), last_due(after)}  # the resume's clock is between
        assert rec.status == "skipped" and rec.note.startswith("job suspended by op@host")
        assert rec.spec_revision == job.revision
        # a worker starting now catches up from this record: nothing older is replayed
        assert not await suspension.resume(c, J), "a second resume has nothing to end"
    _run(tmp_path, body)


def test_an_existing_record_is_kept_and_the_suspension_still_ends(tmp_path: Path) -> None:
    """Create-only: a run claimed before the suspension (or a live worker's record) is
    never overwritten, and the resume succeeds anyway."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        await c.put(keys.job_key(J), SPEC.to_json())
        at = time.time() - 25
        last = SPEC.timetable().between(datetime.fromtimestamp(at, UTC), datetime.now(UTC))[-1]
        a = await new_store("a")
        claimed = await a.claim(J, occurrence_id(last), exclusive=True)
        assert claimed is not None
        await _suspend_at(c, at)
        assert await suspension.resume(c, J)
        assert (await _records(c))[occurrence_id(last)].status == "claimed"
        assert await c.get_one(keys.suspend_key(J)) is None
    _run(tmp_path, body)


def test_nothing_is_recorded_without_a_spec_or_a_suspension_time(tmp_path: Path) -> None:
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        await c.put(keys.suspend_key(J), b"by hand")  # no time: nothing to bound
        await c.put(keys.job_key(J), SPEC.to_json())
        assert await suspension.resume(c, J)
        await c.delete(keys.job_key(J))
        await _suspend_at(c, time.time() - 25)  # a job with no spec
        assert await suspension.resume(c, J)
        assert await _records(c) == {}
    _run(tmp_path, body)
