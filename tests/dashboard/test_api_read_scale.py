"""20,000 jobs: the dashboard keeps them in memory (one paged range read, then a watch) and
answers a page of the jobs list as a slice — sorted, filtered and quick (issue #19)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from coord.client import Client, put
from scheduler import keys
from scheduler.spec import load_jobs
from tests.dashboard.conftest import start_dashboard
from tests.helpers.procs import ProcessGroup, start_coord, wait_until

JOBS = 20_000
PAGE_SECONDS = 1.0
"""The bound on one page of the API (the browser test measures the rendered page)."""


def _specs(tmp: Path) -> list[tuple[str, str]]:
    """(name, canonical JSON) of :data:`JOBS` jobs that never fire in a test; every 7th
    tagged ``tier=gold``."""
    one = tmp / "one.yaml"
    one.write_text("jobs:\n  - {name: x, schedule: '0 0 1 1 *', command: 'true'}\n")
    base = load_jobs(one)[0].to_dict()
    out = []
    for i in range(JOBS):
        spec = dict(base, name=f"job-{i:05d}", tags={"tier": "gold"} if i % 7 == 0 else {})
        out.append((spec["name"], json.dumps(spec, sort_keys=True, separators=(",", ":"))))
    return out


async def _store(endpoint: str, specs: list[tuple[str, str]]) -> None:
    async with Client([endpoint], timeout=30) as c:
        batches = [specs[i:i + 100] for i in range(0, len(specs), 100)]
        sem = asyncio.Semaphore(16)

        async def one(batch: list[tuple[str, str]]) -> None:
            async with sem:
                await c.txn([], [put(keys.job_key(n), v) for n, v in batch], [])
        await asyncio.gather(*(one(b) for b in batches))
        await c.put(keys.suspend_key("job-00003"), json.dumps({"by": "t@h", "at": 1.0,
                                                               "reason": "r"}))


def _timed(dash: object, path: str) -> tuple[float, dict[str, object]]:
    t0 = time.monotonic()
    status, body = dash.get(path)  # type: ignore[attr-defined]
    took = time.monotonic() - t0
    assert status == 200, body
    return took, body


def test_twenty_thousand_jobs_page_sorted_and_filtered(procs: ProcessGroup) -> None:
    store = start_coord(procs)
    asyncio.run(_store(store.endpoint, _specs(procs.workdir)))
    t0 = time.monotonic()
    dash = start_dashboard(procs, store.endpoint)
    wait_until(lambda: dash.get("/api/v1/jobs?limit=1")[1].get("total") == JOBS, 60,
               "the dashboard's first read of 20,000 jobs", step=0.1)
    print(f"dashboard start to {JOBS} jobs read: {time.monotonic() - t0:.1f}s")
    took, body = _timed(dash, "/api/v1/jobs?limit=50")
    names = [j["name"] for j in body["jobs"]]  # type: ignore[attr-defined]
    assert names == [f"job-{i:05d}" for i in range(50)]
    assert body["total"] == JOBS and body["jobs"][0]["next_fire"]  # type: ignore[index]
    assert took < PAGE_SECONDS, f"first page took {took:.2f}s"
    print(f"first page of {JOBS} jobs: {took * 1000:.0f} ms")
    took, body = _timed(dash, "/api/v1/jobs?offset=19990&limit=50")
    assert [j["name"] for j in body["jobs"]] == [  # type: ignore[attr-defined]
        f"job-{i:05d}" for i in range(19990, 20000)]
    assert took < PAGE_SECONDS, f"the last page took {took:.2f}s"
    took, body = _timed(dash, "/api/v1/jobs?tag=tier=gold&limit=3&offset=1")
    assert [j["name"] for j in body["jobs"]] == ["job-00007", "job-00014", "job-00021"]  # type: ignore[attr-defined]
    assert body["total"] == len(range(0, JOBS, 7))
    assert took < PAGE_SECONDS, f"a filtered page took {took:.2f}s"
    took, body = _timed(dash, "/api/v1/jobs?q=job-1999&limit=500")
    assert body["total"] == 10 and took < PAGE_SECONDS
    took, body = _timed(dash, "/api/v1/jobs?suspended=true")
    assert [j["name"] for j in body["jobs"]] == ["job-00003"]  # type: ignore[attr-defined]
    assert body["jobs"][0]["reason"] == "r"  # type: ignore[index]
    first, body = _timed(dash, "/api/v1/overview")
    assert body["jobs"] == JOBS and body["overdue"] == []
    again, _ = _timed(dash, "/api/v1/overview")
    print(f"overview: first {first:.2f}s, then {again:.2f}s")
    assert again < PAGE_SECONDS, f"the overview took {again:.2f}s (first {first:.2f}s)"
