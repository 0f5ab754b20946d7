"""A claim whose answer came back late does not start a job deleted or edited meanwhile
(issue 20, F8's rest: tests/schedsim/FINDINGS.md, seeds 59 and 148).

The claim landed while the spec was current (the claim compares it), but its answer came
back seconds later on a slow path; the job was deleted (or edited) in between and the
worker's jobs view showed it. The run started anyway: only a claim sent ahead of its
instant looked at the view again before starting. Now every start does; a claim whose job
is gone, or whose scheduled occurrence was planned from an older spec, is handed back (its
record and lock deleted) and never started. A manual occurrence only needs the job.

An in-process worker against a coord subprocess, as ``test_worker_review.py``; the late
claim is made on the worker's own claim store and handed to its runner, as its claim loop
does once the answer arrives.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from coord.client import Client
from scheduler import keys
from scheduler.claim import ClaimStore
from scheduler.plan import occurrence_id
from scheduler.worker import Worker
from tests.helpers.procs import ProcessGroup, start_coord
from tests.scheduler.test_worker_faults import apply_text, until
from tests.scheduler.worker_util import _start, _status, _worker

JOB = ("jobs:\n  - name: j\n    schedule: '{schedule}'\n    command: 'touch {marker}'\n"
       "    concurrency: forbid\n")


@pytest.mark.parametrize("change", ["delete", "edit"])
def test_a_late_claim_of_a_changed_job_is_handed_back(
        procs: ProcessGroup, tmp_path: Path, change: str) -> None:
    coord = start_coord(procs)
    marker = tmp_path / "ran"
    text = JOB.format(schedule="0 0 1 1 *", marker=marker)

    async def main() -> None:
        await apply_text(coord.endpoint, text)
        async with Client([coord.endpoint]) as c:
            w1 = _worker("w1", coord.endpoint, tmp_path)
            stop, tasks = await _start([w1])
            try:
                entry = w1.ctx.jobs["j"]
                store = w1.ctx.store
                assert store is not None
                instant = datetime.now(UTC)
                occ = occurrence_id(instant)
                claim = await store.claim("j", occ, exclusive=True,
                                          spec_revision=entry.revision)
                assert claim is not None
                # The change commits and the view shows it before the answer is back.
                if change == "delete":
                    await c.delete(keys.job_key("j"))
                else:
                    await apply_text(coord.endpoint,
                                     JOB.format(schedule="0 0 2 1 *", marker=marker))

                async def seen() -> bool:
                    return w1.ctx.jobs.get("j") is not entry
                await until(seen, 10, f"w1's view to show the {change}")
                # In a task of its own, as the claim loop's (execute registers it).
                await asyncio.create_task(w1.runner.execute(entry, claim, instant))
                assert not marker.exists()
                assert await _status(c, "j", occ) is None
                assert await c.get_one(keys.lock_key("j")) is None
            finally:
                stop.set()
                await asyncio.gather(*tasks)
    asyncio.run(main())


def test_a_late_claim_of_an_unchanged_job_starts(procs: ProcessGroup, tmp_path: Path) -> None:
    """The same late claim with the spec unchanged runs (the check refuses nothing else)."""
    coord = start_coord(procs)
    marker = tmp_path / "ran"

    async def main() -> None:
        await apply_text(coord.endpoint, JOB.format(schedule="0 0 1 1 *", marker=marker))
        async with Client([coord.endpoint]) as c:
            w1 = _worker("w1", coord.endpoint, tmp_path)
            stop, tasks = await _start([w1])
            try:
                entry = w1.ctx.jobs["j"]
                store = w1.ctx.store
                assert store is not None
                instant = datetime.now(UTC)
                occ = occurrence_id(instant)
                claim = await store.claim("j", occ, exclusive=True,
                                          spec_revision=entry.revision)
                assert claim is not None
                # In a task of its own, as the claim loop's (execute registers it).
                await asyncio.create_task(w1.runner.execute(entry, claim, instant))
                assert marker.exists()
                assert await _status(c, "j", occ) == "succeeded"
            finally:
                stop.set()
                await asyncio.gather(*tasks)
    asyncio.run(main())


def test_a_job_deleted_while_the_running_mark_is_answered_does_not_start(
        procs: ProcessGroup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 385 (300..1299): the `running` mark, written before the spawn (``on_lost:
    rerun``, or a late claim), landed before the deletion, but its answer came back
    seconds after it; the process started anyway. Now the view is checked again after
    the mark: the run is recorded ``killed`` and never started."""
    coord = start_coord(procs)
    marker = tmp_path / "ran"
    text = JOB.format(schedule="0 0 1 1 *", marker=marker) + "    on_lost: rerun\n"
    real_update = ClaimStore.update
    holder: list[Worker] = []

    async def update(self: ClaimStore, claim: Any, **changes: Any) -> bool:
        done = await real_update(self, claim, **changes)
        if changes.get("status") == "running":  # the answer is late: the job goes first
            entry = holder[0].ctx.jobs.get("j")
            await self.client.delete(keys.job_key("j"))

            async def seen() -> bool:
                return holder[0].ctx.jobs.get("j") is not entry
            await until(seen, 10, "the view to show the deletion")
        return done
    monkeypatch.setattr(ClaimStore, "update", update)

    async def main() -> None:
        await apply_text(coord.endpoint, text)
        async with Client([coord.endpoint]) as c:
            w1 = _worker("w1", coord.endpoint, tmp_path)
            holder.append(w1)
            stop, tasks = await _start([w1])
            try:
                entry = w1.ctx.jobs["j"]
                store = w1.ctx.store
                assert store is not None
                instant = datetime.now(UTC)
                occ = occurrence_id(instant)
                claim = await store.claim("j", occ, exclusive=True,
                                          spec_revision=entry.revision)
                assert claim is not None
                await asyncio.create_task(w1.runner.execute(entry, claim, instant))
                assert not marker.exists()
                assert await _status(c, "j", occ) == "killed"
                assert await c.get_one(keys.lock_key("j")) is None
            finally:
                stop.set()
                await asyncio.gather(*tasks)
    asyncio.run(main())
