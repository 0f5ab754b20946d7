"""RaftNode request bookkeeping that the process tests cannot pin down: a request that is
not answered within REQUEST_TIMEOUT fails with etcd's ``request timed out``, and a
one-member cluster serves linearizable reads without a ReadIndex round."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from coord.api.proto import internal_pb2, rpc_pb2
from coord.errors import RequestTimeout
from coord.server.apply import Applier
from coord.server.config import ServerConfig
from coord.server.raft_node import REQUEST_TIMEOUT, RaftNode


def _node(tmp_path: Path) -> RaftNode:
    config = ServerConfig(name="n1", data_dir=tmp_path / "n1", listen_client="127.0.0.1:1",
                          listen_peer="127.0.0.1:2")
    config.data_dir.mkdir(parents=True)
    return RaftNode(config, Applier())


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
        assert not node._deadlines

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
                assert node.applied_index >= node.rn.raft.log.committed
        finally:
            await node.stop()

    asyncio.run(body())
