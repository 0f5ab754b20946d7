"""Issue 15 item 1 at the node: an entry the applier cannot carry out (here the
``sort_target=9`` Txn that used to stop every member with exit 70, proposed past the API's
validation as an older member would have let it in) is answered with an error, the member
keeps serving, and a restart replays the entry without dying."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coord.errors import ApplyFailed
from coord.pb import internal_pb2, rpc_pb2
from coord.server.apply import Applier
from coord.server.config import ServerConfig
from coord.server.raft_node import RaftNode
from tests.helpers.fs import require_preallocation


def _config(tmp_path: Path) -> ServerConfig:
    config = ServerConfig(name="n1", data_dir=tmp_path / "n1", listen_client="127.0.0.1:1",
                          listen_peer="127.0.0.1:2")
    config.data_dir.mkdir(parents=True)
    return config


def _started(config: ServerConfig) -> RaftNode:
    node = RaftNode(config, Applier())
    node.recover()
    node.start()
    return node


def _put(key: bytes) -> internal_pb2.InternalRequest:
    return internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=key, value=b"v"))


def _bad_txn() -> internal_pb2.InternalRequest:
    r = rpc_pb2.RangeRequest(key=b"a", range_end=b"\0")
    r.sort_order = 1  # type: ignore[assignment]
    r.sort_target = 9  # type: ignore[assignment]
    return internal_pb2.InternalRequest(txn=rpc_pb2.TxnRequest(success=[
        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"x", value=b"1")),
        rpc_pb2.RequestOp(request_range=r)]))


def test_a_failing_entry_is_answered_and_replayed_without_stopping(tmp_path: Path) -> None:
    require_preallocation(tmp_path)
    config = _config(tmp_path)

    async def body() -> None:
        node = _started(config)
        try:
            async with asyncio.timeout(20):
                while node._leader == 0:
                    await asyncio.sleep(0.01)
                await node.propose(_put(b"a"))
                with pytest.raises(ApplyFailed):
                    await node.propose(_bad_txn())
                await node.propose(_put(b"b"))
            assert node.applier.store.get(b"x") is None
            rev = node.applier.current_revision
        finally:
            await node.stop()

        again = _started(config)  # replays the failing entry from the WAL
        try:
            async with asyncio.timeout(20):
                await again.propose(_put(b"c"))
            store = again.applier.store
            assert store.get(b"x") is None
            assert store.get(b"b") is not None and again.applier.current_revision == rev + 1
        finally:
            await again.stop()

    asyncio.run(body())
