"""Two claims of one occurrence on one worker: the stale one's end does not untrack the
live one (issue 20, seeds 405565 and 411299 of the 20,000-seed sweep:
tests/schedsim/FINDINGS.md, F13).

A worker's claim whose answer came back late, after its session was lost, is on a dead
lease; meanwhile the same worker (re-registered) marked that claim lost and re-ran the
occurrence (``on_lost: rerun``: a takeover, a higher fencing token). Both reached
``Runner.execute``, which tracks runs by (job, occurrence): the stale one's end removed
the entry the re-run had put there, the orphan sweep then took the re-run's lock for an
orphan's, recorded it ``lost`` and freed the lock, and the next occurrence started while
the re-run's process still ran (411299: the re-run first, the stale one after; 405565:
the stale one waiting, the re-run after it).

An in-process worker against a coord subprocess, as ``test_slow_faults_late.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from coord.client import Client
from scheduler import keys
from scheduler.claim import Claim
from scheduler.plan import occurrence_id
from tests.helpers.procs import ProcessGroup, start_coord
from tests.scheduler.test_worker_faults import apply_text
from tests.scheduler.worker_util import _start, _status, _worker

JOB = ("jobs:\n  - name: j\n    schedule: '0 0 1 1 *'\n    command: 'sleep 4'\n"
       "    concurrency: forbid\n")


def _scenario(procs: ProcessGroup, tmp_path: Path, stale_first: bool) -> list[object]:
    coord = start_coord(procs)
    seen: list[object] = []

    async def main() -> None:
        await apply_text(coord.endpoint, JOB)
        async with Client([coord.endpoint]) as c:
            w1 = _worker("w1", coord.endpoint, tmp_path)
            stop, tasks = await _start([w1])
            try:
                entry = w1.ctx.jobs["j"]
                store = w1.ctx.store
                assert store is not None
                now = datetime.now(UTC)
                occ = occurrence_id(now)
                live = await store.claim("j", occ, exclusive=True,
                                         spec_revision=entry.revision)
                assert live is not None
                # The stale claim: an earlier token, on a session lease that is gone.
                rec = dataclasses.replace(live.record, run_id=uuid.uuid4().hex, lease=1)
                stale = Claim("j", occ, live.token - 1, live.token - 1, rec, True, lease=1)
                runs = []
                if stale_first:  # it waits for its instant while the live one starts
                    runs.append(asyncio.create_task(w1.runner.execute(
                        entry, stale, now + timedelta(seconds=1.0))))
                    await asyncio.sleep(0)
                    runs.append(asyncio.create_task(w1.runner.execute(entry, live, now)))
                else:
                    runs.append(asyncio.create_task(w1.runner.execute(entry, live, now)))
                    runs.append(asyncio.create_task(w1.runner.execute(entry, stale, now)))
                await asyncio.wait_for(runs[0 if stale_first else 1], 10)
                # The stale claim ended (never started); the sweep runs now.
                await asyncio.wait_for(w1.reaper.release_orphans(), 10)
                seen.append(await _status(c, "j", occ))
                seen.append(await c.get_one(keys.lock_key("j")) is not None)
                await asyncio.wait_for(runs[1 if stale_first else 0], 15)
                seen.append(await _status(c, "j", occ))
            finally:
                stop.set()
                await asyncio.gather(*tasks)
    asyncio.run(main())
    return seen


@pytest.mark.parametrize("stale_first", [False, True], ids=["411299", "405565"])
def test_a_stale_claims_end_leaves_the_live_run_tracked(
        procs: ProcessGroup, tmp_path: Path, stale_first: bool) -> None:
    during, locked, after = _scenario(procs, tmp_path, stale_first)
    # Still active (its `running` mark may not be written yet), not recorded lost by the
    # orphan sweep.
    assert during in ("claimed", "running")
    assert locked  # its lock kept: no later occurrence can start beside it
    assert after == "succeeded"
