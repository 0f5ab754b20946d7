"""The generic list-and-watch view (``scheduler.worker.view``) over a scripted client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from coord.aiotools import within
from coord.client import CompactedError, UnavailableError, WatchBatch
from scheduler.worker import view as view_module
from scheduler.worker.view import View


@dataclass
class _Count:
    revision: int


class ScriptedClient:
    """``watch`` plays one script per call (a list of batches, then maybe an error) and then
    blocks; ``get`` answers a count-only read with ``store_revision``."""

    def __init__(self, scripts: list[list[WatchBatch | Exception]], store_revision: int = 0
                 ) -> None:
        self.scripts = scripts
        self.store_revision = store_revision
        self.watched: list[tuple[str, int, bool]] = []

    async def get(self, key: str, **_: Any) -> _Count:
        return _Count(self.store_revision)

    async def watch(self, key: str, *, start_revision: int = 0, prev_kv: bool = False,
                    **_: Any) -> AsyncIterator[WatchBatch]:
        self.watched.append((key, start_revision, prev_kv))
        script = self.scripts.pop(0) if self.scripts else []
        for step in script:
            if isinstance(step, Exception):
                raise step
            yield step
        await asyncio.Event().wait()


def _batch(rev: int) -> WatchBatch:
    return WatchBatch(revision=rev, events=[])


def _run(v: View, until: asyncio.Event) -> None:
    async def main() -> None:
        task = asyncio.ensure_future(v.run())
        try:
            await within(until.wait(), 5)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    asyncio.run(main())


@pytest.mark.parametrize("failure", [
    CompactedError(grpc.StatusCode.OUT_OF_RANGE, "compacted", 12),
    UnavailableError(grpc.StatusCode.UNAVAILABLE, "no leader"),
    RuntimeError("a bug in a handler"),
])
def test_a_view_lists_watches_from_the_next_revision_and_relists_after_a_failure(
        failure: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    real_sleep = asyncio.sleep

    async def no_wait(_: float) -> None:
        await real_sleep(0)
    monkeypatch.setattr(view_module.asyncio, "sleep", no_wait)
    loads = iter([10, 20])
    seen: list[int] = []
    done = asyncio.Event()

    async def load() -> int:
        return next(loads)

    async def on_batch(batch: WatchBatch) -> None:
        seen.append(batch.revision)
        if len(seen) == 3:
            done.set()
    client = ScriptedClient([[_batch(11), _batch(13), failure], [_batch(21)]])
    v = View(client, "/cron/jobs/", on_batch, load=load)  # type: ignore[arg-type]
    _run(v, done)
    assert seen == [11, 13, 21]
    assert [w[1] for w in client.watched] == [11, 21]      # from the listed revision + 1
    assert v.revision == 21


def test_a_view_without_a_load_watches_from_the_stores_revision() -> None:
    done = asyncio.Event()

    async def on_batch(batch: WatchBatch) -> None:
        done.set()
    client = ScriptedClient([[_batch(8)]], store_revision=7)
    v = View(client, "/cron/lock/", on_batch, prev_kv=True)  # type: ignore[arg-type]
    _run(v, done)
    assert client.watched == [("/cron/lock/", 8, True)]
    assert v.revision == 8
