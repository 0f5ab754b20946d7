"""A claim whose answer came back late starts only while its lock is still its (issue 20,
seed 553 of the 300..1299 sweep: tests/schedsim/FINDINGS.md, F9).

w1's calls were slow and the store was down for 2.4 s: its session lease expired, which
deleted the lock of its claim of a ``replace`` job's occurrence, and w0 claimed the next
occurrence. w1 then read its own claim back, adopted it and started it — with ``on_lost:
record`` the process is spawned before the ``running`` mark, and that mark compares only
the run record, which the lease expiry does not touch: two runs at once, out of order. A
late claim (adopted, or answered after ``LATE_ANSWER``) is now marked ``running`` first,
by a write that also compares the lock's create revision with the claim's token.

An in-process worker against a coord subprocess, as ``test_worker_review.py``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from coord.client import Client
from scheduler import keys
from scheduler.plan import occurrence_id
from tests.helpers.procs import ProcessGroup, start_coord
from tests.scheduler.test_worker_faults import apply_text
from tests.scheduler.worker_util import _start, _status, _worker

JOB = ("jobs:\n  - name: j\n    schedule: '0 0 1 1 *'\n    command: 'touch {marker}'\n"
       "    concurrency: replace\n")


def _scenario(procs: ProcessGroup, tmp_path: Path, lock_gone: bool) -> tuple[bool, str | None]:
    coord = start_coord(procs)
    marker = tmp_path / "ran"
    out: list[str | None] = []

    async def main() -> None:
        await apply_text(coord.endpoint, JOB.format(marker=marker))
        async with Client([coord.endpoint]) as c:
            w1 = _worker("w1", coord.endpoint, tmp_path)
            stop, tasks = await _start([w1])
            try:
                entry = w1.ctx.jobs["j"]
                store = w1.ctx.store
                assert store is not None
                instant = datetime.now(UTC)
                occ = occurrence_id(instant)
                # The claim lands; its answer is lost; the loop reads it back and adopts it.
                assert await store.claim("j", occ, exclusive=True,
                                         spec_revision=entry.revision) is not None
                rec, kv = await store.get_run_kv("j", occ)
                assert rec is not None and kv is not None
                claim = store.adopt(rec, kv, True)
                assert claim is not None
                if lock_gone:  # meanwhile its session lease expired: the lock went
                    await c.delete(keys.lock_key("j"))
                await asyncio.create_task(w1.runner.execute(entry, claim, instant))
                out.append(await _status(c, "j", occ))
            finally:
                stop.set()
                await asyncio.gather(*tasks)
    asyncio.run(main())
    return marker.exists(), out[0]


def test_an_adopted_claim_whose_lock_went_never_starts(
        procs: ProcessGroup, tmp_path: Path) -> None:
    ran, status = _scenario(procs, tmp_path, lock_gone=True)
    assert not ran
    assert status == "claimed"  # for the lost-run detection to record (its lock is gone)


def test_an_adopted_claim_holding_its_lock_runs(procs: ProcessGroup, tmp_path: Path) -> None:
    ran, status = _scenario(procs, tmp_path, lock_gone=False)
    assert ran and status == "succeeded"
