"""One list-and-watch view of a key prefix, resumed from the revision it listed.

Every watched prefix of the worker (jobs, suspensions, workers, locks, kill requests,
triggers) is a :class:`View`: ``load`` lists the prefix into the worker's state and returns
the revision of the list (or, for a prefix only watched for its events, no ``load``: the
store's revision), then the watch resumes from the next revision and hands every batch to
``on_batch``. A watch cut off by compaction, an error or a bug re-lists.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from coord.client import Client, ClientError, CompactedError, WatchBatch
from scheduler import keys

log = structlog.get_logger("scheduler.worker")

Load = Callable[[], Awaitable[int]]
OnBatch = Callable[[WatchBatch], Awaitable[None]]


class View:
    def __init__(self, client: Client, prefix: str, on_batch: OnBatch, *,
                 load: Load | None = None, prev_kv: bool = False) -> None:
        self.client = client
        self.prefix = prefix
        self.on_batch = on_batch
        self.load = load if load is not None else self._revision_only
        self.prev_kv = prev_kv
        self.revision = 0
        """The revision the view is current to (the list's, then each batch's)."""

    async def _revision_only(self) -> int:
        return (await self.client.get(keys.ROOT, count_only=True)).revision

    async def run(self) -> None:
        """List then watch the prefix, forever; re-list after compaction or an error."""
        while True:
            try:
                self.revision = await self.load()
                async for batch in self.client.watch(self.prefix, prefix=True,
                                                     start_revision=self.revision + 1,
                                                     prev_kv=self.prev_kv):
                    await self.on_batch(batch)
                    self.revision = max(self.revision, batch.revision)
            except CompactedError:
                log.warning("worker.view_compacted", prefix=self.prefix)
            except ClientError as err:
                log.warning("worker.view_failed", prefix=self.prefix, error=str(err))
                await asyncio.sleep(0.5)
            except Exception as err:  # noqa: BLE001 - a bug here must not blind the worker
                # The decoders are total (scheduler.decode), so this is a bug; the view
                # says so and re-lists rather than dying.
                log.error("worker.view_error", prefix=self.prefix, error=repr(err)[:500])
                await asyncio.sleep(1.0)
