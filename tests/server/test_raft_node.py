"""RaftNode request bookkeeping that the process tests cannot pin down: a request that is
not answered within REQUEST_TIMEOUT fails with etcd's ``request timed out``, and a
one-member cluster serves linearizable reads without a ReadIndex round."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from coord.errors import RequestTimeout
from coord.pb import internal_pb2, rpc_pb2
from coord.server.apply import Applier
from coord.server.config import ServerConfig
from coord.server.raft_node import REQUEST_TIMEOUT, RaftNode
from coord.storage.snapshot import Payload
from tests.helpers.fs import require_preallocation


def _config(tmp_path: Path, **kw: Any) -> ServerConfig:
    config = ServerConfig(name="n1", data_dir=tmp_path / "n1", listen_client="127.0.0.1:1",
                          listen_peer="127.0.0.1:2", **kw)
    config.data_dir.mkdir(parents=True)
    return config


def _node(tmp_path: Path) -> RaftNode:
    return RaftNode(_config(tmp_path), Applier())


def _started(config: ServerConfig) -> RaftNode:
    node = RaftNode(config, Applier())
    node.recover()
    node.start()
    return node


def _gated_saves(node: RaftNode, from_index: int) -> tuple[threading.Event, threading.Event]:
    """Hold every snapshot save from ``from_index`` on (not the bootstrap snapshot) until
    the returned gate is set; the second event says a save is waiting at the gate."""
    gate = threading.Event()
    saving = threading.Event()
    real_save = node._snaps.save

    def slow_save(index: int, term: int, data: Payload) -> Path:
        if index >= from_index:
            saving.set()
            assert gate.wait(20), "test gate never opened"
        return real_save(index, term, data)

    node._snaps.save = slow_save  # type: ignore[method-assign]
    return gate, saving


async def _elected(node: RaftNode) -> None:
    while node._leader == 0:  # a fresh member elects itself within 2 timeouts
        await asyncio.sleep(0.01)


def test_waiters_past_their_deadline_fail_with_request_timed_out(tmp_path: Path) -> None:
    async def body() -> None:
        node = _node(tmp_path)
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[Any] = loop.create_future()
        pending: asyncio.Future[Any] = loop.create_future()
        node._bounded(answered)
        node._bounded(pending)
        answered.set_result("ok")
        now = time.monotonic()
        node._expire_waiters(now + REQUEST_TIMEOUT / 2)
        assert not pending.done()
        node._expire_waiters(now + REQUEST_TIMEOUT + 0.01)
        assert answered.result() == "ok"
        with pytest.raises(RequestTimeout) as err:
            pending.result()
        assert str(err.value.message) == "etcdserver: request timed out"
        assert not node._wait.deadlines

    asyncio.run(body())


def test_one_member_reads_need_no_read_index_round(tmp_path: Path) -> None:
    async def body() -> None:
        node = _node(tmp_path)
        node.recover()
        node.start()
        try:
            async with asyncio.timeout(10):
                await node.propose(internal_pb2.InternalRequest(
                    put=rpc_pb2.PutRequest(key=b"k", value=b"v")))
                assert node.rn is not None
                issued: list[bytes] = []
                real = node.rn.read_index
                node.rn.read_index = issued.append  # type: ignore[method-assign]
                try:
                    await node.read_index()
                finally:
                    node.rn.read_index = real  # type: ignore[method-assign]
                assert issued == []
                assert node.applied_index >= node.rn.committed
        finally:
            await node.stop()

    asyncio.run(body())


def test_writes_go_on_while_a_snapshot_file_is_written(tmp_path: Path) -> None:
    """A snapshot file (the whole store: megabytes) is written on its own thread. Writes
    must not wait behind it — they did while it shared the WAL thread, a 100 ms stall every
    ``snapshot_count`` entries — and the WAL segments it covers go only once it is durable.
    A member restarted afterwards has every write, through the new snapshot."""
    config = _config(tmp_path, snapshot_count=20)

    def put(i: int) -> internal_pb2.InternalRequest:
        return internal_pb2.InternalRequest(
            put=rpc_pb2.PutRequest(key=b"k%03d" % i, value=b"v%d" % i))

    def snapshots_from(index: int) -> list[Path]:
        return [p for p in (config.data_dir / "snap").glob("*.snap")
                if int(p.name.split("-")[0], 16) >= index]

    async def body() -> None:
        node = _started(config)
        gate, saving = _gated_saves(node, from_index=20)
        try:
            async with asyncio.timeout(20):
                await _elected(node)
                for i in range(25):
                    await node.propose(put(i))
                while not saving.is_set():  # the snapshot at ~20 entries is being saved
                    await asyncio.sleep(0.01)
                for i in range(25, 60):  # ... and writes complete meanwhile
                    await node.propose(put(i))
                assert not snapshots_from(20)
                # 35 more entries, but no second snapshot is built while the first is
                # being written (a slow disk must not pile snapshots up in memory)
                assert len(node._snap_saves) == 1 and node._snap_build is None
                gate.set()
                while not snapshots_from(20):
                    await asyncio.sleep(0.01)
        finally:
            gate.set()
            await node.stop()

        again = _started(config)
        try:
            async with asyncio.timeout(20):  # applied in order: the earlier ones are too
                await again.propose(put(60))
            store = again.applier.store
            assert [store.get(b"k%03d" % i) is not None for i in range(60)] == [True] * 60
            assert again._core is not None and again._core.snaps.index >= 20
        finally:
            await again.stop()

    asyncio.run(body())


def test_a_snapshot_due_while_one_was_saved_follows_without_another_write(
        tmp_path: Path) -> None:
    """Entries applied while a snapshot is written (a slow disk) can make the next one due,
    but none is built meanwhile (one at a time). It used to wait for the next applied entry;
    when the writes stop there, the log kept every byte of them in memory (a full run under
    load: the early snapshots of the large-entries test below stopped at index 10)."""
    budget = 64 * 1024
    config = _config(tmp_path, snapshot_count=100_000, snapshot_bytes=budget)

    async def body() -> None:
        node = _started(config)
        gate, saving = _gated_saves(node, from_index=3)
        try:
            async with asyncio.timeout(20):
                await _elected(node)
                i = 0
                while not saving.is_set():  # 8 KiB entries until a snapshot is written
                    await node.propose(internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(
                        key=b"k%03d" % i, value=bytes(8192))))
                    i += 1
                first = node._core.snaps.index if node._core else 0
                for j in range(i, i + 12):  # 96 KiB more while it is being written
                    await node.propose(internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(
                        key=b"k%03d" % j, value=bytes(8192))))
                last = node._applied
                saved = set(node._snap_saves)
                assert len(saved) == 1 and node._snap_build is None  # one at a time
                gate.set()
                await asyncio.wait(saved)
                # No further write: the save's end itself found the next snapshot due
                # and started it (its done callbacks ran in the same loop turn).
                assert node._snap_build is not None or node._snap_saves
                while node._core is None or node._core.snaps.index < last:
                    await asyncio.sleep(0.01)
                assert first < last
        finally:
            gate.set()
            await node.stop()

    asyncio.run(body())


def _value(applier: Applier, key: bytes) -> bytes | None:
    rec = applier.store.get(key)
    return None if rec is None else rec[4]


def test_large_entries_snapshot_early_and_the_snapshot_data_stays_on_disk(
        tmp_path: Path) -> None:
    """Entries applied since the last snapshot holding ``snapshot_bytes`` trigger one long
    before ``snapshot_count``; the log then keeps at most ``snapshot_bytes / 2`` of entries
    behind it. The core's storage holds the snapshot without its data (the file has it)
    and reads the file when asked — what a follower needing a snapshot is sent is the full
    state. Later builds reuse the mapped file's bytes; a restart recovers every write."""
    from coord.server.membership import decode_snapshot_data

    budget = 64 * 1024
    config = _config(tmp_path, snapshot_count=100_000, snapshot_bytes=budget)
    values = {b"k%03d" % i: bytes([i]) * 8192 for i in range(40)}

    async def body() -> None:
        node = _started(config)
        try:
            async with asyncio.timeout(20):
                await _elected(node)
                for k, v in values.items():
                    await node.propose(internal_pb2.InternalRequest(
                        put=rpc_pb2.PutRequest(key=k, value=v)))
                while node._snap_saves or node._snap_build is not None:
                    await asyncio.sleep(0.01)
            storage = node.storage
            path = storage.snapshot_file
            assert path is not None and path.exists()
            snap = storage.snapshot()
            index = snap.metadata.index
            assert index > 10  # several early snapshots, not the bootstrap one
            assert storage._snapshot.data == b""  # held in the file only
            # The log behind the snapshot is bounded by bytes, not by CATCH_UP_ENTRIES.
            behind = storage.entries(storage.first_index(), index + 1)
            assert sum(len(e.data) for e in behind) <= budget // 2
            # What the core would send a follower: the full state at the snapshot index.
            _, state = decode_snapshot_data(snap.data)
            fresh = Applier()
            fresh.restore(state, time.monotonic())
            # The i-th put is revision i + 2: the snapshot holds exactly the puts up to its
            # store revision, each with its value.
            upto = list(values)[:fresh.store.current_revision - 1]
            assert len(upto) > 10
            assert {k: _value(fresh, k) for k in values} == {
                k: values[k] if k in upto else None for k in values}
        finally:
            await node.stop()

        again = RaftNode(config, Applier())
        again.recover()
        assert again.storage.snapshot_file is not None
        again.start()
        try:
            async with asyncio.timeout(20):
                await again.propose(internal_pb2.InternalRequest(
                    put=rpc_pb2.PutRequest(key=b"last", value=b"x")))
            assert {k: _value(again.applier, k) for k in values} == values
        finally:
            await again.stop()

    asyncio.run(body())


@pytest.mark.parametrize("inline", [True, False])
def test_a_lone_entry_is_written_and_synced_on_the_loop(
        tmp_path: Path, inline: bool) -> None:
    """A lone client's writes (one entry per Ready, nothing queued) are appended and
    fsync'd on the loop, without the WAL thread's two wake-ups; ``RAFTCRON_INLINE_SYNC=0``
    (``ServerConfig.inline_sync``)
    sends them to the thread. Either way every acknowledged write is in the WAL, and its
    sequence number is known (WAL segments are released by it after a snapshot)."""
    config = _config(tmp_path, inline_sync=inline)

    async def body() -> None:
        node = _started(config)
        try:
            async with asyncio.timeout(20):
                await _elected(node)
                submitted = []
                assert node._writer is not None
                real_submit = node._writer._io.submit

                def counting_submit(fn: Any, *args: Any) -> Any:
                    submitted.append(fn)
                    return real_submit(fn, *args)

                node._writer._io.submit = counting_submit  # type: ignore[method-assign]
                first = node.storage.last_index() + 1
                for i in range(10):
                    await node.propose(internal_pb2.InternalRequest(
                        put=rpc_pb2.PutRequest(key=b"k%d" % i, value=b"v")))
                last = node.storage.last_index()
            assert (len(submitted) == 0) is inline
            assert node._core is not None
            assert all(i in node._core.snaps.entry_seq for i in range(first, last + 1))
        finally:
            await node.stop()

        again = RaftNode(config, Applier())
        again.recover()
        try:
            assert again.storage.last_index() == last
            logged = b"".join(e.data for e in again.storage.entries(first, last + 1))
            assert all(b"k%d" % i in logged for i in range(10))
        finally:
            await again.stop()

    asyncio.run(body())


def test_db_size_counts_the_wal_records_not_its_preallocated_space(tmp_path: Path) -> None:
    """What Status reports as dbSize (``Core.approximate_size``) grows with the writes, and
    is not the 64 MiB the current WAL segment reserves on disk."""
    from coord.server.core import Core

    require_preallocation(tmp_path)
    config = _config(tmp_path)

    async def body() -> None:
        node = _started(config)
        core = Core(node, node.applier, config)
        try:
            async with asyncio.timeout(20):
                await _elected(node)
                segment = next((config.data_dir / "wal").glob("*.wal"))
                assert segment.stat().st_size == 64 * 1024 * 1024
                before = core.approximate_size()
                assert before < 1024 * 1024
                for i in range(20):
                    await node.propose(internal_pb2.InternalRequest(
                        put=rpc_pb2.PutRequest(key=b"k%d" % i, value=b"v" * 1000)))
                assert before + 20 * 1000 < core.approximate_size() < before + 64 * 1000
        finally:
            await node.stop()

    asyncio.run(body())


def test_apply_is_total_a_request_past_validation_fails_alone(tmp_path: Path) -> None:
    """A committed request the applier cannot handle (here a sort target outside the enum,
    proposed straight to the node, past the API's validation) is answered ApplyFailed; the
    member keeps applying what follows, and a restart replays the entry without dying."""
    from coord.errors import ApplyFailed

    bad = internal_pb2.InternalRequest(txn=rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(
        request_range=rpc_pb2.RangeRequest(key=b"k", sort_order=1, sort_target=9))]))  # type: ignore[arg-type]
    config = _config(tmp_path)

    async def body() -> int:
        node = _started(config)
        try:
            async with asyncio.timeout(10):
                await node.propose(internal_pb2.InternalRequest(
                    put=rpc_pb2.PutRequest(key=b"k", value=b"v")))
                with pytest.raises(ApplyFailed):
                    await node.propose(bad)
                after = await node.propose(internal_pb2.InternalRequest(
                    put=rpc_pb2.PutRequest(key=b"after", value=b"v")))
                return int(after.header.revision)
        finally:
            await node.stop()

    assert asyncio.run(body()) == 3

    async def again() -> int:
        node = _started(config)  # replays the bad entry from the WAL
        try:
            async with asyncio.timeout(10):
                resp = await node.propose(internal_pb2.InternalRequest(
                    put=rpc_pb2.PutRequest(key=b"third", value=b"v")))
                return int(resp.header.revision)
        finally:
            await node.stop()

    assert asyncio.run(again()) == 4
