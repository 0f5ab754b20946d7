"""A worker that owns its process freezes its heap once the jobs are loaded, so the
collector's full passes stop walking the modules, specs and job timers (each pass was a
pause every due occurrence waited out); workers sharing a process (tests) leave it alone."""

from __future__ import annotations

import asyncio
import gc
from dataclasses import replace
from pathlib import Path

import pytest

from coord.aiotools import within
from scheduler.cli import _worker_config
from scheduler.worker import Worker
from tests.helpers.procs import ProcessGroup, start_coord
from tests.scheduler.test_worker_faults import apply_text

JOBS = "jobs:\n" + "".join(
    f"  - name: j{i:03d}\n    schedule: '@every 1h'\n    command: [true]\n" for i in range(200))


async def frozen_after_ready(worker: Worker) -> int:
    stop = asyncio.Event()
    task = asyncio.ensure_future(worker.run(stop))
    try:
        await within(worker.ready.wait(), 30)
        assert len(worker.jobs) == 200
        return gc.get_freeze_count()
    finally:
        stop.set()
        await task


def test_cli_worker_freezes_its_heap_once_jobs_are_loaded(procs: ProcessGroup,
                                                          tmp_path: Path) -> None:
    coord = start_coord(procs)
    asyncio.run(apply_text(coord.endpoint, JOBS))
    cfg = _worker_config("w1", [coord.endpoint], "", 5, tmp_path / "logs", 0.0)
    assert cfg.freeze_heap, "the CLI's worker freezes its heap by default"
    gc.unfreeze()
    try:
        assert asyncio.run(frozen_after_ready(Worker(replace(cfg, freeze_heap=False)))) == 0
        # Modules, specs and timers: far more objects than any test leaves lying around.
        assert asyncio.run(frozen_after_ready(Worker(cfg))) > 50_000
    finally:
        gc.unfreeze()


def test_freezing_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAFTCRON_GC_FREEZE", "0")
    assert not _worker_config("w1", ["127.0.0.1:1"], "", 5, Path("logs"), 0.0).freeze_heap
