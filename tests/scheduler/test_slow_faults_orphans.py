"""A claim whose answer is late is either adopted or abandoned, never both (issue 20, F9:
tests/schedsim/FINDINGS.md).

A worker's claim loop adopts a claim of its own once a read shows it landed (its answer was
lost or late); the orphan sweep (``Reaper.release_orphans``) abandons a lock of this
worker's session whose run it is not running. Both decided about the same claim: the sweep
recorded it ``missed`` and freed its lock, a later occurrence of the ``forbid`` job was
claimed, and the loop started the adopted run as well — two at once. The sweep now leaves
a claim alone while the claim loop still holds its attempt (``ClaimStore.attempted``).

An in-process worker against a coord subprocess, as ``test_worker_review.py``; the late
claim is made on the worker's own claim store, the way its claim loop makes it.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from coord.client import Client
from scheduler import keys
from scheduler.plan import occurrence_id
from tests.helpers.procs import ProcessGroup, start_coord
from tests.scheduler.test_worker_faults import apply_text, until
from tests.scheduler.worker_util import _start, _status, _worker

JOB = ("jobs:\n  - name: j\n    schedule: '0 0 1 1 *'\n    command: 'true'\n"
       "    concurrency: forbid\n")


def test_the_sweep_leaves_a_claim_its_claim_loop_is_deciding(
        procs: ProcessGroup, tmp_path: Path) -> None:
    coord = start_coord(procs)

    async def main() -> None:
        await apply_text(coord.endpoint, JOB)
        async with Client([coord.endpoint]) as c:
            w1 = _worker("w1", coord.endpoint, tmp_path)
            stop, tasks = await _start([w1])
            try:
                store = w1.ctx.store
                assert store is not None
                spec = await c.get_one(keys.job_key("j"))
                assert spec is not None
                occ = occurrence_id(datetime.now(UTC))
                # The claim loop's attempt, landed; the loop has not read it back yet.
                claim = await store.claim("j", occ, exclusive=True,
                                          spec_revision=spec.mod_revision)
                assert claim is not None
                await w1.reaper.release_orphans()
                assert await _status(c, "j", occ) == "claimed"
                lock = await c.get_one(keys.lock_key("j"))
                assert lock is not None and json.loads(lock.value)["occurrence"] == occ
                # Once the loop is done with it (gave up without adopting), it is an
                # orphan: abandoned, its lock freed.
                store.forget("j", occ)
                await w1.reaper.release_orphans()

                async def abandoned() -> bool:
                    return (await _status(c, "j", occ) == "missed"
                            and await c.get_one(keys.lock_key("j")) is None)
                await until(abandoned, 10, "the orphaned claim to be abandoned")
            finally:
                stop.set()
                await asyncio.gather(*tasks)
    asyncio.run(main())
