"""Workers keep the store's history bounded: run records churn a revision or two per
occurrence, and a store nobody compacts grows forever (coord in memory and in every
snapshot; etcd until its space quota makes it read-only). Compaction must not disturb the
scheduler: its watches resume or re-list, and jobs keep running, on coord and on etcd."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coord.client import Client, CompactedError
from scheduler.cli import _worker_config
from scheduler.worker import Worker
from tests.helpers.binaries import require_binary
from tests.helpers.procs import Proc, ProcessGroup, start_coord, start_etcd
from tests.scheduler.test_worker_faults import apply_text, until

JOB = ("jobs:\n  - name: {name}\n    schedule: '@every 1s'\n"
       "    command: 'echo $RAFTCRON_OCCURRENCE >> {out}'\n")


@pytest.fixture(params=["coord", "etcd"])
def store(request: pytest.FixtureRequest, procs: ProcessGroup) -> Proc:
    if request.param == "coord":
        return start_coord(procs)
    return start_etcd(procs, etcd_bin=require_binary("etcd"))


def lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def test_workers_compact_old_history_and_keep_scheduling(store: Proc, tmp_path: Path) -> None:
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    cfg = _worker_config("w1", [store.endpoint], "", 3, tmp_path / "logs", 0.0, "1s")
    assert cfg.compact_retention == 1.0

    async def body() -> None:
        await apply_text(store.endpoint, JOB.format(name="a", out=first))
        stop = asyncio.Event()
        async with Client([store.endpoint]) as c:
            rev0 = (await c.get("/cron/", prefix=True)).header.revision
            task = asyncio.ensure_future(Worker(cfg).run(stop))
            try:
                async def compacted() -> bool:
                    try:
                        await c.get("/cron/", prefix=True, revision=rev0)
                    except CompactedError:
                        return True
                    return False
                await until(compacted, 20, f"revision {rev0} to be compacted away")
                # The worker's views survived: a job added after the compaction runs, and
                # the first one still does.
                await apply_text(store.endpoint, JOB.format(name="b", out=second))
                n = lines(first)

                async def both_run() -> bool:
                    return lines(second) >= 2 and lines(first) >= n + 2
                await until(both_run, 20, "both jobs to run after the compaction")
            finally:
                stop.set()
                await task
    asyncio.run(body())
    for f in (first, second):
        occ = f.read_text().split()
        assert len(occ) == len(set(occ)), "an occurrence ran twice"


def test_compaction_can_be_turned_off(tmp_path: Path) -> None:
    cfg = _worker_config("w1", ["127.0.0.1:1"], "", 3, tmp_path, 0.0, "0")
    assert cfg.compact_retention == 0
    assert _worker_config("w1", ["127.0.0.1:1"], "", 3, tmp_path, 0.0).compact_retention == 600
