"""Group commit: many asyncio callers, one write + fsync per batch, on one dedicated thread.

``await committer.commit(records)`` returns once ``records`` are durable. While a batch is
being written and fsync'd on the committer's thread, new submissions queue up; when the fsync
returns, every waiter of that batch is resolved and the whole queue becomes the next batch.
So under load there is one thread hop and one fsync per *batch*, not per request, and an idle
committer starts a batch immediately (no added latency, no timers).

Invariants:

* A waiter is resolved (with the sequence number of its last record) only after the flush
  that wrote its records has returned, i.e. after its records were fsync'd.
* Batches are flushed in submission order, one at a time, always on the same thread; records
  of one ``commit`` call are contiguous in the log.
* If a flush raises, every waiter of that batch gets the exception, and so does every later
  ``commit`` (the WAL is poisoned after a failed fsync; see :class:`WALFailedError`).
* Cancelling a waiter does not un-write its records: they are still flushed with the batch.
* While a committer owns a WAL, nothing else may call the WAL (it is not thread-safe).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import structlog

from coord.storage.codec import Record
from coord.storage.errors import StorageError
from coord.storage.wal import WAL

__all__ = ["FlushFn", "GroupCommitter"]

log = structlog.get_logger(__name__)

FlushFn = Callable[[Sequence[Record]], int]
"""Writes records durably (append + fsync) and returns the sequence number of the last one.

Called on the committer's thread; for zero records it must return the current last sequence
number (and may skip the fsync).
"""


class GroupCommitter:
    """Batches concurrent ``commit`` calls into one flush each. Create inside a running loop
    or before it; use from one event loop only."""

    def __init__(self, flush: FlushFn, *, thread_name: str = "wal-sync") -> None:
        self._flush = flush
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._pending: list[tuple[int, asyncio.Future[int]]] = []
        self._pending_records: list[Record] = []
        self._writer: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self._closed = False
        self.batches = 0
        """Number of flushes done so far (for metrics and tests)."""

    @classmethod
    def for_wal(cls, wal: WAL, *, thread_name: str = "wal-sync") -> GroupCommitter:
        """A committer whose flush is ``wal.append(records)`` then ``wal.sync()``."""

        def flush(records: Sequence[Record]) -> int:
            last = wal.append(records)
            wal.sync()
            return last

        return cls(flush, thread_name=thread_name)

    async def commit(self, records: Sequence[Record]) -> int:
        """Make ``records`` durable; return the sequence number of the last of them.

        With no records, it is a barrier: it returns once everything submitted before it is
        durable. Raises the flush's exception if the batch failed, and :class:`StorageError`
        after a failure or :meth:`close`.
        """
        if self._closed:
            raise StorageError("group committer is closed")
        if self._failed is not None:
            raise StorageError(f"group committer failed earlier: {self._failed!r}") from (
                self._failed
            )
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._pending_records.extend(records)
        self._pending.append((len(self._pending_records), fut))
        if self._writer is None:
            self._writer = loop.create_task(self._run(), name="group-commit-writer")
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                waiters, records = self._pending, self._pending_records
                self._pending, self._pending_records = [], []
                try:
                    last = await loop.run_in_executor(self._executor, self._flush, records)
                except asyncio.CancelledError:
                    gone = StorageError("group commit writer cancelled; outcome unknown")
                    self._failed = gone
                    for _, fut in [*waiters, *self._pending]:
                        if not fut.done():
                            fut.set_exception(gone)
                    self._pending, self._pending_records = [], []
                    raise
                except Exception as exc:  # noqa: BLE001 - handed on to every waiter of the batch
                    self._failed = exc
                    log.error("group_commit.flush_failed", error=repr(exc), waiters=len(waiters))
                    for _, fut in waiters:
                        if not fut.done():
                            fut.set_exception(exc)
                    for _, fut in self._pending:
                        if not fut.done():
                            fut.set_exception(exc)
                    self._pending, self._pending_records = [], []
                    return
                self.batches += 1
                first = last - len(records) + 1
                for end, fut in waiters:
                    if not fut.done():
                        fut.set_result(first + end - 1)
        finally:
            self._writer = None

    async def close(self) -> None:
        """Wait for queued commits to be flushed, then stop the thread. Idempotent."""
        self._closed = True
        writer = self._writer
        if writer is not None:
            await asyncio.shield(writer)
        self._executor.shutdown(wait=True)
