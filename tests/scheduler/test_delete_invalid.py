"""`jobs delete` removes a stored job whose spec is invalid (a ghost, a deeply nested value):
that is the job an operator most wants gone (review finding: it answered "the stored job is
invalid" and kept it)."""

from __future__ import annotations

import asyncio

from coord.client import Client
from scheduler.admin import apply_jobs, delete_job
from scheduler.spec_load import load_jobs_text
from tests.helpers.procs import ProcessGroup, start_coord


def test_jobs_delete_removes_an_invalid_stored_job(procs: ProcessGroup) -> None:
    coord = start_coord(procs)

    async def body() -> None:
        async with Client([coord.endpoint], timeout=5) as c:
            await c.put("/cron/jobs/innocent", '{"name": "ghost", "schedule": "@every 1s"}')
            await c.put("/cron/jobs/deep", "[" * 100_000)
            await delete_job(c, "innocent")
            await delete_job(c, "deep")
            assert (await c.get("/cron/jobs/", prefix=True)).kvs == []

    asyncio.run(body())


def test_deleting_a_job_deletes_its_dead_man_state(procs: ProcessGroup) -> None:
    """`jobs delete` and `apply --prune` take `/cron/deadman/<job>` with the job: a job
    re-created under the name starts its `expect:` clock afresh instead of inheriting an
    `overdue` (and a later `recovered`) of the one deleted."""
    coord = start_coord(procs)
    spec = '{"name": "%s", "schedule": "@every 1h", "command": ["true"]}'
    state = '{"overdue": true, "last_success": 1.0, "since": 2.0}'

    async def body() -> None:
        async with Client([coord.endpoint], timeout=5) as c:
            for name in ("gone", "pruned", "kept"):
                await c.put(f"/cron/jobs/{name}", spec % name)
                await c.put(f"/cron/deadman/{name}", state)
            await delete_job(c, "gone")
            kept = load_jobs_text('jobs: [{name: kept, schedule: "@every 1h", command: [true]}]')
            await apply_jobs(c, kept, prune=True, dry_run=False)
            left = [kv.key.decode() for kv in (await c.get("/cron/", prefix=True)).kvs]
            assert left == ["/cron/deadman/kept", "/cron/jobs/kept"]

    asyncio.run(body())
