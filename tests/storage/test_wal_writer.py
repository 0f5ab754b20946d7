"""WalWriter: where each WAL write runs (on the loop or the WAL's thread)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from coord.storage import WAL, Record
from coord.storage.codec import ENTRY
from coord.storage.wal_writer import WalWriter

REC = [Record(ENTRY, b"x")]


def _writer(tmp_path: Path, *, inline_sync: bool) -> WalWriter:
    wal, _ = WAL.open(tmp_path / "wal")
    return WalWriter(wal, inline_sync=inline_sync)


def test_a_lone_entry_is_written_and_synced_on_the_loop(tmp_path: Path) -> None:
    async def body() -> None:
        w = _writer(tmp_path, inline_sync=True)
        try:
            last = w.write(REC, True, lone=True)
            assert last == 1 and w.wal.durable_seq == 1
        finally:
            await w.close(None)

    asyncio.run(body())


def test_without_inline_sync_or_with_more_queued_the_write_goes_to_the_thread(
        tmp_path: Path) -> None:
    async def body() -> None:
        for inline_sync, lone in ((False, True), (True, False)):
            w = _writer(tmp_path / f"{inline_sync}-{lone}", inline_sync=inline_sync)
            try:
                pending = w.write(REC, True, lone=lone)
                assert isinstance(pending, asyncio.Future)
                assert await pending == 1 and w.wal.durable_seq == 1
            finally:
                await w.close(None)

    asyncio.run(body())


def test_nothing_to_sync_is_buffered_on_the_loop(tmp_path: Path) -> None:
    async def body() -> None:
        w = _writer(tmp_path, inline_sync=False)
        try:
            assert w.write(REC, False, lone=False) == 1
            assert w.wal.durable_seq == 0  # buffered for the next fsync
        finally:
            await w.close(None)

    asyncio.run(body())


def test_while_a_job_runs_on_the_thread_no_write_runs_on_the_loop(tmp_path: Path) -> None:
    """The WAL is used from one thread at a time: a segment release queued on the thread
    sends even a lone entry's write behind it."""
    async def body() -> None:
        w = _writer(tmp_path, inline_sync=True)
        gate = threading.Event()
        try:
            job = w.run(gate.wait)
            assert w.busy
            pending = w.write(REC, True, lone=True)
            assert isinstance(pending, asyncio.Future) and not pending.done()
            gate.set()
            await job
            assert await pending == 1
            assert not w.busy
        finally:
            gate.set()
            await w.close(None)

    asyncio.run(body())
