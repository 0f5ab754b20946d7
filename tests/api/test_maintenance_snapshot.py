"""Maintenance.Snapshot (what `etcdctl snapshot save` calls) builds its bytes a slice at a
time between other work, and still returns the state of one instant: the writes applied
while it is being built are not in it, a compaction meanwhile starts it again, and the
bytes are those of ``Applier.snapshot()`` taken at that instant. (That etcdctl accepts the
file — size, sha256 trailer — is in tests/compat/test_etcdctl_maintenance.py.)"""

from __future__ import annotations

import asyncio
import random

from coord.api.maintenance import _chunks
from coord.pb import internal_pb2, rpc_pb2
from coord.server.apply import Applier
from coord.server.snapshotter import state_snapshot


def _put(applier: Applier, key: bytes, value: bytes) -> None:
    applier.apply(internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=key, value=value)),
                  0.0)


def _keys(snapshot: bytes) -> set[bytes]:
    fresh = Applier()
    fresh.restore(snapshot)
    items, _, _ = fresh.store.range(b"\0", b"\0")
    return {key for key, _ in items}


def test_writes_go_on_while_the_snapshot_is_built_and_are_not_in_it() -> None:
    applier = Applier()
    for i in range(3000):  # 3,000 revisions: 15 slices of 200
        _put(applier, b"before/%04d" % i, b"v" * 50)
    expected = applier.snapshot()

    async def body() -> tuple[bytes, int]:
        writes = 0

        async def writer() -> None:
            nonlocal writes
            while True:
                _put(applier, b"during/%04d" % writes, b"w")
                writes += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(writer())
        try:
            pieces = await state_snapshot(applier)
        finally:
            task.cancel()
        return b"".join(pieces), writes

    got, writes = asyncio.run(body())
    # Built between other work: the writer ran while it was built (one turn per slice)...
    assert writes >= 10
    # ...and none of its writes are in it: the bytes are the state when it began.
    assert got == expected
    assert _keys(got) == {b"before/%04d" % i for i in range(3000)}


def test_a_compaction_during_the_build_starts_it_again() -> None:
    applier = Applier()
    for i in range(2000):
        _put(applier, b"k/%d" % (i % 50), b"v%d" % i)

    async def body() -> bytes:
        async def compact_soon() -> None:
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            rev = applier.store.current_revision
            applier.apply(internal_pb2.InternalRequest(
                compaction=rpc_pb2.CompactionRequest(revision=rev)), 0.0)

        task = asyncio.ensure_future(compact_soon())
        pieces = await state_snapshot(applier)
        await task
        return b"".join(pieces)

    got = asyncio.run(body())
    assert got == applier.snapshot()  # the compacted state, built again from the start
    fresh = Applier()
    fresh.restore(got)
    assert fresh.store.compact_revision == applier.store.compact_revision > 0


def test_chunks_concatenate_to_the_pieces() -> None:
    rng = random.Random(7)
    for _ in range(200):
        pieces: list[bytes | memoryview] = [
            rng.randbytes(rng.choice([0, 1, 5, 31, 32, 33, 100])) for _ in range(rng.randint(0, 6))
        ]
        size = rng.choice([1, 7, 32])
        out = list(_chunks(pieces, size))
        assert b"".join(out) == b"".join(pieces)
        assert all(len(c) == size for c in out[:-1]) and all(0 < len(c) <= size for c in out)
