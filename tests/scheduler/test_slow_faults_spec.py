"""A claim compares the job's spec (issue 20, F8: tests/schedsim/FINDINGS.md).

A worker whose jobs view is stale — cut off from the store, or its claim late on the wire
— claimed by the spec it last saw, and the store accepted it: a deleted job ran, or an
edited job's old schedule. The claim (and an ``on_lost: rerun`` takeover) now requires
``/cron/jobs/<job>`` still at the mod revision the occurrence was planned from; a manual
occurrence only requires the job to exist. Against a real in-process coord member, as
``test_claim.py``; no worker runs.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

from coord.client import Client
from scheduler import keys
from scheduler.claim import ClaimStore, RunRecord
from scheduler.spec import spec_from_json
from tests.scheduler.test_claim import _run

J = "job"
OCC = "20260101T000000.000Z"
OCC2 = "20260101T000010.000Z"
MANUAL = "20260101T000005.000Z-manual"


def _spec(schedule: str) -> bytes:
    return spec_from_json(json.dumps({"name": J, "schedule": schedule,
                                      "command": "true"})).to_json().encode()


def test_a_deleted_jobs_occurrence_is_not_claimed(tmp_path: Path) -> None:
    """Planned from revision r, the job deleted: the claim is refused and writes nothing
    (no run record, no lock), for forbid and allow alike; a manual one is refused too."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        rev = (await c.put(keys.job_key(J), _spec("@every 10s"))).revision
        await c.delete(keys.job_key(J))
        store = await new_store("w1")
        for exclusive in (True, False):
            assert await store.claim(J, OCC, exclusive=exclusive, spec_revision=rev) is None
        assert await store.claim(J, MANUAL, exclusive=True, spec_revision=rev) is None
        assert (await c.get(keys.runs_prefix(J), prefix=True)).kvs == []
        assert await c.get_one(keys.lock_key(J)) is None
    _run(tmp_path, body)


def test_an_edited_jobs_old_occurrence_is_not_claimed(tmp_path: Path) -> None:
    """Planned from the old spec, the job edited since: refused; planned from the new
    spec: claimed. A manual occurrence of the old entry still runs (the job exists)."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        old = (await c.put(keys.job_key(J), _spec("@every 10s"))).revision
        new = (await c.put(keys.job_key(J), _spec("@every 20s"))).revision
        store = await new_store("w1")
        assert await store.claim(J, OCC, exclusive=False, spec_revision=old) is None
        assert await c.get_one(keys.run_key(J, OCC)) is None
        claim = await store.claim(J, OCC, exclusive=False, spec_revision=new)
        assert claim is not None and claim.record.spec_revision == new
        assert await store.claim(J, MANUAL, exclusive=False, spec_revision=old) is not None
    _run(tmp_path, body)


def test_a_takeover_compares_the_spec_too(tmp_path: Path) -> None:
    """A run lost before it started is re-run (``on_lost: rerun``) only while the spec it
    was planned from is the job's."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        rev = (await c.put(keys.job_key(J), _spec("@every 10s"))).revision
        w1, w2 = await new_store("w1"), await new_store("w2")

        async def lose(occ: str) -> RunRecord:
            claim = await w1.claim(J, occ, exclusive=True, spec_revision=rev)
            assert claim is not None
            await c.delete(keys.lock_key(J))  # as its holder's lease expiring would
            lost = await w2.mark_lost(J, occ, "gone", run_id=claim.record.run_id, token=None)
            assert lost is not None
            return lost

        lost = await lose(OCC)
        assert await w2.takeover(J, OCC, lost, lost.fencing_token, spec_revision=rev)
        await c.delete(keys.lock_key(J))
        lost = await lose(OCC2)
        await c.put(keys.job_key(J), _spec("@every 20s"))
        assert await w2.takeover(J, OCC2, lost, lost.fencing_token, spec_revision=rev) is None
        assert await c.get_one(keys.lock_key(J)) is None
    _run(tmp_path, body)
