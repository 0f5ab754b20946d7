"""Group commit: batching, durability before resolution, one thread, failures."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from coord.storage import (
    ENTRY,
    WAL,
    GroupCommitter,
    Record,
    StorageError,
    WALFailedError,
)


def rec(i: int) -> Record:
    return Record(ENTRY, b"r%08d" % i)


class CountingSync:
    """An fdatasync that counts calls and the threads it ran on."""

    def __init__(self) -> None:
        self.calls = 0
        self.threads: set[int] = set()

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.threads.add(threading.get_ident())
        os.fdatasync(fd)


def test_concurrent_commits_share_fsyncs(tmp_path: Path) -> None:
    """64 committers x 20 sequential commits: every commit is durable and in the log, in
    per-committer order, with far fewer fsyncs than commits, all on one non-loop thread."""
    sync = CountingSync()
    wal, _ = WAL.open(tmp_path, sync_fn=sync)
    sync.calls = 0
    sync.threads.clear()  # opening created and synced the first segment here
    committers, rounds = 64, 20

    async def main() -> dict[int, list[int]]:
        gc = GroupCommitter.for_wal(wal)
        seqs: dict[int, list[int]] = {}

        async def worker(w: int) -> None:
            for r in range(rounds):
                seq = await gc.commit([rec(w * 1000 + r)])
                assert wal.durable_seq >= seq  # resolved only once synced
                seqs.setdefault(w, []).append(seq)

        await asyncio.gather(*(worker(w) for w in range(committers)))
        assert gc.batches == sync.calls
        await gc.close()
        return seqs

    seqs = asyncio.run(main())
    total = committers * rounds
    assert sync.calls <= total // 8, sync.calls
    assert len(sync.threads) == 1 and threading.get_ident() not in sync.threads
    wal.close()
    _, recs = WAL.open(tmp_path)
    assert len(recs) == total
    for w, ss in seqs.items():
        assert ss == sorted(ss)
        assert [recs[s - 1] for s in ss] == [rec(w * 1000 + r) for r in range(rounds)]


def test_batch_forms_while_fsync_in_flight_and_nobody_resolves_early() -> None:
    """Commits submitted while a flush is blocked wait for it and then go out together in
    ONE next flush; no waiter resolves before the flush holding its records returned."""
    gate = threading.Event()
    entered = threading.Event()
    durable: list[Record] = []
    flushes: list[int] = []

    def flush(records: Sequence[Record]) -> int:
        flushes.append(len(records))
        entered.set()
        gate.wait(timeout=10)
        gate.clear()
        durable.extend(records)
        return len(durable)

    async def main() -> None:
        gc = GroupCommitter(flush)

        async def commit_checked(i: int) -> int:
            seq = await gc.commit([rec(i)])
            assert rec(i) in durable and durable[seq - 1] == rec(i)
            return seq

        first = asyncio.create_task(commit_checked(0))
        await asyncio.to_thread(entered.wait, 10)
        entered.clear()
        later = [asyncio.create_task(commit_checked(i)) for i in range(1, 51)]
        await asyncio.sleep(0)  # let them enqueue (they must all still be waiting)
        assert not first.done() and not any(t.done() for t in later)
        gate.set()  # first flush completes
        assert await first == 1
        await asyncio.to_thread(entered.wait, 10)  # second flush started ...
        assert not any(t.done() for t in later)  # ... and nobody in it has resolved yet
        gate.set()
        results = await asyncio.gather(*later)
        assert sorted(results) == list(range(2, 52))
        await gc.close()

    asyncio.run(main())
    assert flushes == [1, 50]


def test_multi_record_commits_get_their_last_seq(tmp_path: Path) -> None:
    """Each commit gets the sequence number of its own last record; an empty commit is a
    barrier returning the last sequence number before it."""
    wal, _ = WAL.open(tmp_path)

    async def main() -> list[int]:
        gc = GroupCommitter.for_wal(wal)
        out = await asyncio.gather(
            gc.commit([rec(1), rec(2), rec(3)]),
            gc.commit([]),
            gc.commit([rec(4)]),
            gc.commit([rec(5), rec(6)]),
        )
        await gc.close()
        return list(out)

    assert asyncio.run(main()) == [3, 3, 4, 6]
    wal.close()
    _, recs = WAL.open(tmp_path)
    assert recs == [rec(i) for i in range(1, 7)]


def test_failed_flush_fails_its_batch_and_later_commits(tmp_path: Path) -> None:
    """An fsync error reaches every waiter of the batch; later commits are refused."""
    fail = threading.Event()

    def sync(fd: int) -> None:
        if fail.is_set():
            raise OSError(5, "EIO")
        os.fdatasync(fd)

    wal, _ = WAL.open(tmp_path, sync_fn=sync)

    async def main() -> None:
        gc = GroupCommitter.for_wal(wal)
        assert await gc.commit([rec(0)]) == 1
        fail.set()
        results = await asyncio.gather(
            *(gc.commit([rec(i)]) for i in range(1, 10)), return_exceptions=True
        )
        assert all(isinstance(r, WALFailedError) for r in results), results
        with pytest.raises(StorageError):
            await gc.commit([rec(99)])
        await gc.close()

    asyncio.run(main())
    wal.close()


def test_closed_committer_refuses() -> None:
    """commit after close raises StorageError."""

    async def main() -> None:
        gc = GroupCommitter(len)
        await gc.close()
        with pytest.raises(StorageError):
            await gc.commit([rec(1)])

    asyncio.run(main())


def test_cancelled_waiter_still_has_its_records_written() -> None:
    """Cancelling a commit does not un-write it: its records go out with the batch, and
    the other waiters of that batch are resolved normally."""
    gate = threading.Event()
    entered = threading.Event()
    durable: list[Record] = []

    def flush(records: Sequence[Record]) -> int:
        entered.set()
        gate.wait(timeout=10)
        durable.extend(records)
        return len(durable)

    async def main() -> None:
        gc = GroupCommitter(flush)
        first = asyncio.create_task(gc.commit([rec(1)]))
        other = asyncio.create_task(gc.commit([rec(2)]))
        await asyncio.to_thread(entered.wait, 10)
        first.cancel()
        gate.set()
        assert await other == 2
        with pytest.raises(asyncio.CancelledError):
            await first
        await gc.close()

    asyncio.run(main())
    assert durable == [rec(1), rec(2)]
