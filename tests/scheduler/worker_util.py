"""Helpers shared by the worker tests that run workers in-process against a coord
subprocess (test_worker_review.py, test_worker_kill.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from coord.client import Client
from scheduler import keys
from scheduler.worker import Worker, WorkerConfig


def _worker(name: str, endpoint: str, tmp: Path, *, ttl: int = 3, sweep: float = 3600.0,
            tags: dict[str, str] | None = None, grace: float = 0.3) -> Worker:
    return Worker(WorkerConfig(name=name, endpoints=[endpoint], session_ttl=ttl,
                               log_dir=tmp / "logs" / name, sweep_interval=sweep,
                               tags=tags or {}, grace=grace))


async def _status(c: Client, job: str, occ: str) -> str | None:
    kv = await c.get_one(keys.run_key(job, occ))
    return None if kv is None else str(json.loads(kv.value)["status"])


async def _start(ws: list[Worker]) -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in ws]
    await asyncio.gather(*(w.ready.wait() for w in ws))
    return stop, tasks


async def _views_show(ws: list[Worker], names: set[str]) -> bool:
    return all(names <= set(w.workers) for w in ws)


async def _true(value: bool) -> bool:
    return value


async def _reaped(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()
