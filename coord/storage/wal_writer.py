"""WalWriter: the one writer of a member's WAL, and where each write runs.

A Ready's records are written either on the event loop or on the WAL's own thread:

* ``inline_sync`` and one entry with nothing queued behind it (a lone client): append and
  fsync on the loop. The thread hand-off costs two wake-ups, more than the fsync itself,
  so a lone client's put or lock goes faster this way (figures in docs/cluster.md);
* nothing to make durable (only the commit index moved): append on the loop, into the
  WAL's buffer for its next fsync; a thread hand-off would cost more than the encoding;
* otherwise (many entries, a snapshot, an fsync with work queued): on the thread, so that
  the loop keeps serving while the disk works.

The WAL is used from one thread at a time: the caller awaits each write before the next,
and a write runs on the loop only while no job (a segment release) is queued on the
thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from coord.storage.codec import Record
from coord.storage.wal import WAL
from coord.storage.watermark import Watermark

T = TypeVar("T")


class WalWriter:
    def __init__(self, wal: WAL, *, inline_sync: bool = True) -> None:
        self.wal = wal
        self.inline_sync = inline_sync
        """Whether a lone entry's write and fsync may run on the loop (see the module doc)."""
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal")
        self._jobs = 0
        """Jobs queued on or running on the thread."""
        self.on_fsync: Callable[[float], None] | None = None
        """Told each write's fsync seconds (etcd's wal_fsync_duration_seconds); None: off."""

    @property
    def busy(self) -> bool:
        """Whether a job is queued on or running on the WAL thread."""
        return self._jobs > 0

    def write(self, records: Sequence[Record], must_sync: bool, *,
              lone: bool) -> int | asyncio.Future[int]:
        """Write ``records`` (and fsync them if ``must_sync``); ``lone``: they hold at most
        one entry and nothing is queued behind them. Returns the last record's sequence
        number, or a future of it when the write went to the thread."""
        wal = self.wal
        if not self._jobs and ((must_sync and self.inline_sync and lone) or not must_sync):
            last = wal.append(records)
            if must_sync:
                self._sync()
            return last

        def write() -> int:
            last = wal.append(records)
            if must_sync:
                self._sync()
            return last

        # Not counted as a job: the caller awaits it before its next write, and jobs
        # queued after it (``run``) wait for it on the same thread.
        return asyncio.get_running_loop().run_in_executor(self._io, write)

    def _sync(self) -> None:
        observe = self.on_fsync
        if observe is None:
            self.wal.sync()
            return
        start = time.perf_counter()
        self.wal.sync()
        observe(time.perf_counter() - start)

    def run(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn`` (which may use the WAL) on the WAL thread, after the writes before it."""
        self._jobs += 1
        fut = asyncio.get_running_loop().run_in_executor(self._io, fn)

        def done(_: asyncio.Future[T]) -> None:
            self._jobs -= 1

        fut.add_done_callback(done)
        return fut

    async def close(self, watermark: Watermark | None) -> None:
        """Close the WAL after the jobs before it; a WAL that is durable to its end is
        marked clean in ``watermark``."""
        wal = self.wal

        def close() -> None:
            wal.close()
            if watermark is not None and wal.durable_seq == wal.last_seq:
                watermark.mark(wal.durable_seq, clean=True)

        try:
            await self.run(close)
        finally:
            self._io.shutdown(wait=True)
