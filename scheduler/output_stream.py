"""Live output of a running run, through the store (``raftcron jobs logs --follow``).

The worker side (:class:`OutputPublisher`): while a run's process lives, at most every
:data:`PUBLISH_EVERY` seconds and only when the log file grew, the run's output key
``/cron/output/<job>/<occurrence>`` is put with ``{"attempt", "end", "tail"}``: the
attempt, how many bytes this attempt has written so far, and the last :data:`TAIL_BYTES`
of them. The key lives on the run's session lease (a dead worker's key goes with it) and
is deleted when the run has ended, *after* its final run record write, so a reader that
sees the delete finds the run's end in the record. One key per run, each value bounded:
the store holds at most ``TAIL_BYTES`` per running run, and a run that ends before
``PUBLISH_EVERY`` costs nothing. Nobody following costs the same: the writes do not
depend on readers.

The reader side (:func:`follow`): lists the key and the run record in one txn, watches
both from that revision, prints the bytes beyond what it printed (a gap larger than the
tail is said as such), and ends when the record is final and no stream is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from coord.aiotools import within
from coord.client import Client, ClientError, CompactedError
from coord.client import txn as ops
from scheduler import keys
from scheduler.decode import BadValue, json_object

log = structlog.get_logger(__name__)

OUTPUT = "/cron/output/"
PUBLISH_EVERY = 0.5
"""Seconds between two puts of a run's output key (at most)."""
TAIL_BYTES = 8192
"""Bytes of output each put carries (the newest); a follower further behind sees a gap."""
ACTIVE = frozenset({"claimed", "running", "retrying"})


def output_key(job: str, occurrence: str) -> str:
    return f"{OUTPUT}{job}/{occurrence}"


class OutputPublisher:
    """Publishes one run's output while it runs. ``run`` is the worker's
    :class:`scheduler.worker.state.Running`: its ``process`` (one per attempt) is read at
    each tick, so retries continue on the same key."""

    def __init__(self, client: Client, run: Any) -> None:
        self.client = client
        self.run = run
        claim = run.claim
        self.key = output_key(claim.job, claim.occurrence)
        self.lease: int = claim.lease
        self.sent: tuple[int, int] | None = None  # (attempt, end) last put
        self.opened = False
        self.writes = 0
        self._task = asyncio.create_task(self._loop(), name=f"output:{self.key}")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(PUBLISH_EVERY)
            try:
                await self.publish()
            except (ClientError, OSError) as err:  # the store is away: the next tick retries
                log.debug("output.publish_failed", key=self.key, error=str(err))

    async def publish(self) -> None:
        proc = self.run.process
        path = getattr(proc, "log_path", None)
        if proc is None or path is None:
            return
        attempt = int(proc.request.attempt)
        start = int(getattr(proc, "_start_offset", 0))
        tail, end = await asyncio.to_thread(read_tail, path, start)
        if self.sent == (attempt, end):
            return
        body = json.dumps({"attempt": attempt, "end": end,
                           "tail": tail.decode("utf-8", errors="replace")})
        await self.client.put(self.key, body, lease=self.lease)
        self.sent, self.opened = (attempt, end), True
        self.writes += 1

    async def close(self) -> None:
        """After the run's last record write: one last put of what is new, then delete."""
        self._task.cancel()
        # Whatever ended the loop (even a bug) must not fail the run it reports on.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        if not self.opened:
            return  # ended before its first tick: nothing was written, nothing to delete
        with contextlib.suppress(ClientError, OSError):
            await within(self.publish(), 5)
        with contextlib.suppress(ClientError, TimeoutError):
            await within(self.client.delete(self.key), 5)
            self.writes += 1
        log.debug("output.closed", key=self.key, writes=self.writes)


def read_tail(path: Any, start: int) -> tuple[bytes, int]:
    """(the last TAIL_BYTES written since ``start``, bytes written since ``start``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return b"", 0
    try:
        size = os.fstat(fd).st_size
        n = min(max(0, size - start), TAIL_BYTES)
        return (os.pread(fd, n, size - n) if n else b""), max(0, size - start)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- reader


@dataclass
class Chunk:
    attempt: int
    end: int
    tail: str


def decode_chunk(value: bytes) -> Chunk | None:
    try:
        d = json_object(value)
    except BadValue:
        return None
    a, e, t = d.get("attempt"), d.get("end"), d.get("tail")
    if not (isinstance(a, int) and isinstance(e, int) and isinstance(t, str)):
        return None
    return Chunk(a, e, t)


class Printer:
    """Prints each new byte once, in order, per attempt."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.attempt = 0
        self.end = 0

    def show(self, c: Chunk) -> None:
        if c.attempt != self.attempt:
            if self.attempt or c.attempt > 1:  # a retry: say where its output starts
                self.emit(f"--- attempt {c.attempt} ---\n")
            self.attempt, self.end = c.attempt, 0
        tail = c.tail.encode()
        new = c.end - self.end
        if new <= 0:
            return
        if new > len(tail):
            self.emit(f"[... {new - len(tail)} bytes not shown ...]\n")
            new = len(tail)
        self.emit(tail[len(tail) - new:].decode("utf-8", errors="replace"))
        self.end = c.end


async def follow(client: Client, job: str, occurrence: str,
                 emit: Callable[[str], None]) -> str | None:
    """Print a run's output as it is written; returns the run record's final value
    (JSON text) when the run has ended, None if the record is gone."""
    out_key, rec_key = output_key(job, occurrence), keys.run_key(job, occurrence)
    snap = await client.txn([], [ops.get(rec_key), ops.get(out_key)])
    rev = snap.revision
    recs, outs = snap.responses[0].kvs, snap.responses[1].kvs  # type: ignore[union-attr]
    printer = Printer(emit)
    if outs and (c := decode_chunk(outs[0].value)) is not None:
        printer.show(c)
    final = _final(recs[0].value) if recs else None
    if not recs or final is not None:
        return recs[0].value.decode() if recs else None
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def pump(which: str, key: str) -> None:
        try:
            async for batch in client.watch(key, start_revision=rev + 1):
                for e in batch.events:
                    await queue.put((which, e))
        except CompactedError:
            await queue.put(("compacted", None))

    tasks = [asyncio.create_task(pump("out", out_key)),
             asyncio.create_task(pump("rec", rec_key))]
    ended: Any = None
    wait_delete_after: int | None = None  # the stream was open at the end's revision
    last_delete = 0
    try:
        while True:
            which, e = await queue.get()
            if which == "compacted":
                return None
            if which == "out":
                if e.is_put and (c := decode_chunk(e.kv.value)) is not None:
                    printer.show(c)
                elif not e.is_put:
                    last_delete = max(last_delete, e.kv.mod_revision)
            elif not e.is_put:
                return None
            elif ended is None and _final(e.kv.value) is not None:
                ended = e.kv
                # The worker deletes the stream after the run's last record write: if it
                # existed at the end's revision, its last put and delete are still to come.
                at = await client.get(out_key, revision=ended.mod_revision)
                wait_delete_after = ended.mod_revision if at.kvs else None
            if ended is not None and (wait_delete_after is None
                                      or last_delete > wait_delete_after):
                return bytes(ended.value).decode()
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, ClientError):
                await t


def _final(value: bytes) -> str | None:
    try:
        status = json_object(value).get("status")
    except BadValue:
        return None
    return str(status) if status not in ACTIVE else None
