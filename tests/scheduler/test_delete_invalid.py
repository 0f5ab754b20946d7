"""`jobs delete` removes a stored job whose spec is invalid (a ghost, a deeply nested value):
that is the job an operator most wants gone (review finding: it answered "the stored job is
invalid" and kept it)."""

from __future__ import annotations

import asyncio

from coord.client import Client
from scheduler.admin import delete_job
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
