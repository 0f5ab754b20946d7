"""A claim whose answer is late is either adopted or abandoned, never both (issue 20, F9:
tests/schedsim/FINDINGS.md).

A worker's claim loop adopts a claim of its own once a read shows it landed (its answer was
lost or late); the orphan sweep (``Reaper.release_orphans``) abandons a lock of this
worker's session whose run it is not running. Both decided about the same claim: the loop
read it ``claimed``, the sweep recorded it ``missed`` and freed its lock (a later
occurrence of the ``forbid`` job could be claimed), and the loop started it anyway — two at
once. The sweep now leaves a ``claimed`` record alone while a claim loop for its occurrence
still runs (``Runner.deciding``).

An in-process worker against a coord subprocess, as ``test_worker_review.py``: its first
claim txn lands but the answer is lost (an injected UNAVAILABLE), and its read-back waits
until the sweep has run, the interleaving of seeds 31, 48, 235 and 261.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from coord.client import Client, UnavailableError
from scheduler import keys
from scheduler.claim import ClaimStore
from scheduler.plan import occurrence_id
from tests.helpers.procs import ProcessGroup, start_coord
from tests.scheduler.test_worker_faults import apply_text, until
from tests.scheduler.worker_util import _start, _status, _worker


def test_a_claim_read_back_late_is_not_abandoned_under_its_loop(
        procs: ProcessGroup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    coord = start_coord(procs)
    marker = tmp_path / "ran"
    job = ("jobs:\n  - name: j\n    schedule: '0 0 1 1 *'\n"
           f"    command: 'touch {marker}'\n    concurrency: forbid\n")
    real_claim, real_read = ClaimStore.claim, ClaimStore.get_run_kv
    lost_answer, read_back, swept = [True], asyncio.Event(), asyncio.Event()

    async def claim(self: ClaimStore, *args: Any, **kwargs: Any) -> Any:
        result = await real_claim(self, *args, **kwargs)
        if lost_answer:
            lost_answer.clear()
            raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "injected: answer lost")
        return result

    async def get_run_kv(self: ClaimStore, job: str, occ: str) -> Any:
        found = await real_read(self, job, occ)
        if not read_back.is_set() and not lost_answer:
            read_back.set()  # the loop's read-back: it waits for the sweep to have run
            await swept.wait()
        return found

    monkeypatch.setattr(ClaimStore, "claim", claim)
    monkeypatch.setattr(ClaimStore, "get_run_kv", get_run_kv)

    async def main() -> None:
        await apply_text(coord.endpoint, job)
        async with Client([coord.endpoint]) as c:
            w1 = _worker("w1", coord.endpoint, tmp_path)
            stop, tasks = await _start([w1])
            occ = f"{occurrence_id(datetime.now(UTC))}-manual-0001"
            try:
                await c.put(keys.trigger_key("j", occ), json.dumps({"at": time.time()}))
                await asyncio.wait_for(read_back.wait(), 10)
                assert await _status(c, "j", occ) == "claimed"
                await w1.reaper.release_orphans()  # the sweep, while the loop decides
                swept.set()

                async def ended() -> bool:
                    return await _status(c, "j", occ) not in ("claimed", "running")
                await until(ended, 10, "the run to end")
                # Adopted and run once, never abandoned under the loop.
                assert await _status(c, "j", occ) == "succeeded"
                assert marker.exists()
            finally:
                swept.set()
                stop.set()
                await asyncio.gather(*tasks)
    asyncio.run(main())
