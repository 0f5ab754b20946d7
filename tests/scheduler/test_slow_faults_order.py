"""A late ``forbid``/``replace`` claim requires every later occurrence due so far
unrecorded, not only the next one (issue 20, F10's shape: seed 31 at main with h14's
fixes, tests/schedsim/FINDINGS.md).

w0's claim of ``job1@…25.081Z`` retried through slow calls and an outage; meanwhile w1,
restarted, claimed ``…31.081Z`` (a restarted timer's first claim compares no previous
occurrence), and ran it. w0's retry at 31.5 compared only ``…27.081Z`` unrecorded, which
held: 25.081 started after 31.081. A claim made after its next occurrence fell due now
also requires those due after it up to now unrecorded (at most 16), and is recorded
``skipped`` when one of them is recorded.

An in-process worker against a coord subprocess, as ``test_worker_review.py``: its claim
loop is handed an occurrence three instants old whose next-but-one is recorded.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from coord.client import Client
from scheduler.claim import ClaimStore
from scheduler.plan import occurrence_id
from scheduler.worker import decide
from tests.helpers.procs import ProcessGroup, start_coord
from tests.scheduler.test_worker_faults import apply_text
from tests.scheduler.worker_util import _start, _status, _worker

JOB = ("jobs:\n  - name: j\n    schedule: '* * * * *'\n    command: 'true'\n"
       "    concurrency: forbid\n    starting_deadline: 10m\n")


def test_a_late_claim_is_refused_once_a_later_due_occurrence_is_recorded(
        procs: ProcessGroup, tmp_path: Path) -> None:
    coord = start_coord(procs)

    async def main() -> None:
        await apply_text(coord.endpoint, JOB)
        async with Client([coord.endpoint]) as c:
            w1 = _worker("w1", coord.endpoint, tmp_path)
            stop, tasks = await _start([w1])
            try:
                entry = w1.ctx.jobs["j"]
                store = w1.ctx.store
                assert store is not None
                minute = datetime.now(UTC).replace(second=0, microsecond=0)
                old, nxt, further = (minute - timedelta(minutes=k) for k in (3, 2, 1))
                # The one after next was claimed and settled elsewhere; the next one not.
                assert await store.record_missed("j", occurrence_id(further), status="skipped",
                                                 note="test: settled elsewhere")
                claim = await w1.firing._claim(
                    entry, occurrence_id(old), old,
                    decide.Neighbours(None, occurrence_id(nxt)))
                assert claim is None
                assert await _status(c, "j", occurrence_id(old)) == "skipped"
            finally:
                stop.set()
                await asyncio.gather(*tasks)
    asyncio.run(main())


def test_two_claim_loops_of_one_worker_start_an_occurrence_once(
        procs: ProcessGroup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 1252 (300..1299): a job edited twice within a second had two timers of one
    worker fire the same occurrence; one claim loop's claim landed, the other's was
    refused (its spec moved) and it read the record back, found a run id of this
    worker's attempts and adopted it: the occurrence started twice at once. Only a lone
    claim loop adopts now."""
    coord = start_coord(procs)
    real_claim = ClaimStore.claim
    first = [True]

    async def claim(self: ClaimStore, *args: Any, **kwargs: Any) -> Any:
        mine = first.pop() if first else False
        result = await real_claim(self, *args, **kwargs)
        if mine:
            await asyncio.sleep(0.5)  # the first loop's answer comes back late
        return result
    monkeypatch.setattr(ClaimStore, "claim", claim)

    async def main() -> None:
        await apply_text(coord.endpoint, JOB)
        async with Client([coord.endpoint]) as c:
            w1 = _worker("w1", coord.endpoint, tmp_path)
            stop, tasks = await _start([w1])
            try:
                entry = w1.ctx.jobs["j"]
                instant = datetime.now(UTC) - timedelta(seconds=1)
                occ = occurrence_id(instant)
                claims = await asyncio.gather(*(w1.firing._claim(
                    entry, occ, instant, decide.ALONE) for _ in range(2)))
                assert sum(cl is not None for cl in claims) == 1
                assert await _status(c, "j", occ) == "claimed"
            finally:
                stop.set()
                await asyncio.gather(*tasks)
    asyncio.run(main())
