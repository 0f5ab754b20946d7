"""``jobs resume`` records the occurrences due while the job was suspended (issue 20,
F2's edges: tests/schedsim/FINDINGS.md).

The records are written by the resume's own txn, so they are there even when no worker is
up at the resume (before, only a live worker seeing the resume wrote the last one, and the
first worker to start later replayed it), and they are bounded by the resuming client's clock
(the one that set the suspension's time), not by a worker's, which may run ahead (seed 658
recorded ``skipped`` an occurrence due after the resume). Against a real in-process coord
member, as ``test_claim.py``; no worker runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from coord.client import Client
from scheduler import keys, suspension
from scheduler.claim import ClaimStore, RunRecord
from scheduler.plan import Timetable, occurrence_id
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


def test_resume_records_the_suspended_occurrences_with_no_worker_up(tmp_path: Path) -> None:
    """Every occurrence due while suspended (within the starting deadline, 60 s) gets a
    ``skipped`` record from the resume itself, the last one included: a later start
    catches up from it, and a claim a cut-off worker kept retrying through the suspension
    (seeds 8137, 10651) is refused."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        job = await c.put(keys.job_key(J), SPEC.to_json())
        at = time.time() - 35  # three or four occurrences due while suspended
        await _suspend_at(c, at)
        before = time.time()
        assert await suspension.resume(c, J)
        after = time.time()
        assert await c.get_one(keys.suspend_key(J)) is None
        recs = await _records(c)

        def due(upto: float) -> set[str]:
            return {occurrence_id(t) for t in SPEC.timetable().between(
                datetime.fromtimestamp(at, UTC), datetime.fromtimestamp(upto, UTC))}
        assert set(recs) in (due(before), due(after)), recs  # the resume's clock is between
        assert len(recs) >= 3
        for rec in recs.values():
            assert rec.status == "skipped" and rec.note.startswith("job suspended by op@host")
            assert rec.spec_revision == job.revision
        assert not await suspension.resume(c, J), "a second resume has nothing to end"
    _run(tmp_path, body)


def test_only_occurrences_a_claim_could_still_start_are_recorded() -> None:
    """Those older than the starting deadline at the resume can no longer start (a claim
    past its deadline gives up): not recorded, except the last one, always; at most
    RECORD_MAX."""
    every = Timetable.parse("@every 10s")
    t0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)
    assert suspension.due_while_suspended(every, at(-1), at(200), 30) == [
        at(170), at(180), at(190), at(200)]
    assert suspension.due_while_suspended(every, at(-1), at(205), 1) == [at(200)]
    assert suspension.due_while_suspended(every, at(1), at(9), 60) == []
    many = suspension.due_while_suspended(every, at(-1), at(100_000), 1e9)
    assert len(many) == suspension.RECORD_MAX and many[-1] == at(100_000)


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
