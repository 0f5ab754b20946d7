"""Operators applying job files at once: ``raftcron apply -f FILE --prune`` through its
production code (``scheduler.spec.load_jobs_text`` then ``scheduler.admin.apply_jobs``, as
``scheduler.cli_files.apply`` does), each over its own client to the simulated store.

An operator whose apply fails runs it again, as the CLI's error tells them to: after a
conflict (``ApplyConflict``: another apply won the compare-and-set) at once, after a store
error (unanswered: it may have landed) a second later; until it is acknowledged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coord.client import Client, ClientError
from coord.client.types import RangeResult, TxnResult
from scheduler.admin import ApplyConflict, apply_jobs
from scheduler.spec_load import load_jobs_text, spec_from_json
from tests.schedsim.options import Fault, JobPlan

if TYPE_CHECKING:
    from tests.schedsim.runner import World

ATTEMPTS = 30


@dataclass
class Applied:
    """One operator's apply of one file, as the operator saw it."""

    operator: str
    file: int
    sent: float
    acked: float | None
    """When the apply succeeded (None: it never did, within ``ATTEMPTS``)."""
    revision: int
    """The store revision at which the stored jobs were the file: the revision of its last
    txn, or of its read when there was nothing to change."""
    jobs: dict[str, str]
    """The file's jobs, name → canonical JSON (what ``/cron/jobs/`` must hold after it)."""
    attempts: int


def canonical(job: JobPlan) -> str:
    return spec_from_json(job.spec_json()).to_json()


def file_text(jobs: Sequence[JobPlan]) -> str:
    """A job file (JSON is YAML) with these jobs."""
    return json.dumps({"jobs": [json.loads(j.spec_json()) for j in jobs]}, indent=1)


class _Tracking(Client):
    """The operator's client, noting the revision of its last answer; ``blind`` (a bug
    injection) drops a txn's compares, so apply overwrites whatever it did not read."""

    last = 0
    blind = False

    async def range(self, req: Any) -> RangeResult:
        r = await super().range(req)
        self.last = r.revision
        return r

    async def txn(self, compare: Sequence[Any], success: Sequence[Any] = (),
                  failure: Sequence[Any] = ()) -> TxnResult:
        r = await super().txn([] if self.blind else compare, success, failure)
        self.last = r.revision
        return r


async def apply_file(world: World, f: Fault) -> None:
    o = world.o
    jobs = [*o.jobs, *o.files[f.file]]
    specs = load_jobs_text(file_text(jobs), f"{f.worker}-file{f.file}.yaml")
    client = _Tracking(["sim:2379"], timeout=5.0,
                       channels=world.store.channels(f"apply:{f.worker}"))
    client.blind = "blind_apply" in world.bugs
    sent = world.clock.now
    done = Applied(f.worker, f.file, sent, None, 0, {j.name: canonical(j) for j in jobs}, 0)
    world.applies.append(done)
    try:
        for attempt in range(1, ATTEMPTS + 1):
            done.attempts = attempt
            try:
                await apply_jobs(client, specs, prune=True, dry_run=False)
            except ApplyConflict:
                await asyncio.sleep(0.05)
                continue
            except ClientError:
                await asyncio.sleep(1.0)
                continue
            done.acked, done.revision = world.clock.now, client.last
            return
    finally:
        await client.close()
