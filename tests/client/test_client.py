"""coord.client against a real etcd and against coord: the same assertions on both.

The scheduler relies on exactly these behaviours (txn guards, watch resume, lease loss),
so each test runs on both backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from coord.client import (
    Client,
    CompactedError,
    Compare,
    FutureRevisionError,
    LeaseNotFoundError,
    UnavailableError,
    delete,
    get,
    put,
)
from tests.helpers.binaries import require_binary
from tests.helpers.procs import ProcessGroup, free_port, process_group, start_coord, start_etcd

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="module", params=["etcd", "coord"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[str, ProcessGroup]]:
    workdir: Path = tmp_path_factory.mktemp(f"client-{request.param}")
    with process_group(workdir) as group:
        if request.param == "etcd":
            start_etcd(group, etcd_bin=require_binary("etcd"))
        else:
            start_coord(group)
        yield group.procs[0].endpoint, group


@pytest.fixture
def endpoint(backend: tuple[str, ProcessGroup], request: pytest.FixtureRequest) -> str:
    return backend[0]


def test_put_get_delete_and_revisions(endpoint: str) -> None:
    async def body() -> None:
        async with Client([endpoint]) as c:
            r1 = await c.put("/t/kv/a", "1")
            r2 = await c.put("/t/kv/a", "2", prev_kv=True)
            assert r2.revision == r1.revision + 1
            assert r2.prev_kv is not None and r2.prev_kv.value == b"1"
            got = await c.get("/t/kv/a")
            assert [(kv.value, kv.version, kv.create_revision, kv.mod_revision)
                    for kv in got.kvs] == [(b"2", 2, r1.revision, r2.revision)]
            await c.put("/t/kv/b", "x")
            pref = await c.get("/t/kv/", prefix=True)
            assert [kv.key for kv in pref.kvs] == [b"/t/kv/a", b"/t/kv/b"]
            old = await c.get("/t/kv/a", revision=r1.revision)
            assert old.kvs[0].value == b"1"
            d = await c.delete("/t/kv/", prefix=True, prev_kv=True)
            assert d.deleted == 2 and sorted(kv.key for kv in d.prev_kvs) == [
                b"/t/kv/a", b"/t/kv/b"]
            assert (await c.get("/t/kv/", prefix=True)).kvs == []
            with pytest.raises(FutureRevisionError):
                await c.get("/t/kv/a", revision=d.revision + 1000)
    run(body())


def test_txn_create_guard_is_exclusive(endpoint: str) -> None:
    """The claim idiom: only one of many concurrent create==0 txns succeeds."""
    async def body() -> None:
        async with Client([endpoint]) as c:
            async def claim(i: int) -> bool:
                r = await c.txn([Compare.create("/t/lock/x") == 0],
                                [put("/t/lock/x", f"w{i}")], [get("/t/lock/x")])
                return r.succeeded
            results = await asyncio.gather(*(claim(i) for i in range(20)))
            assert results.count(True) == 1
            holder = await c.get_one("/t/lock/x")
            assert holder is not None and holder.value == f"w{results.index(True)}".encode()
            r = await c.txn([Compare.value("/t/lock/x") == b"nobody"], [], [delete("/t/lock/x")])
            assert not r.succeeded and await c.get_one("/t/lock/x") is None
    run(body())


def test_lease_keepalive_and_revoke(endpoint: str) -> None:
    async def body() -> None:
        async with Client([endpoint]) as c:
            g = await c.grant(5)
            await c.put("/t/lease/k", "v", lease=g.id)
            ttl = await c.time_to_live(g.id, keys=True)
            assert ttl.granted_ttl == 5 and ttl.keys == [b"/t/lease/k"]
            assert await c.keepalive_once(g.id) == 5
            ka = c.keep_alive(g.id, g.ttl)
            await c.revoke(g.id)
            await asyncio.wait_for(ka.lost.wait(), timeout=10)
            await ka.stop()
            assert await c.get_one("/t/lease/k") is None
            with pytest.raises(LeaseNotFoundError):
                await c.revoke(g.id)
    run(body())


def test_watch_history_live_and_compaction(endpoint: str) -> None:
    async def body() -> None:
        async with Client([endpoint]) as c:
            first = await c.put("/t/w/a", "1")
            await c.put("/t/w/b", "2")
            await c.delete("/t/w/a")
            seen: list[tuple[bool, bytes, int]] = []

            async def consume() -> None:
                async for batch in c.watch("/t/w/", prefix=True,
                                           start_revision=first.revision):
                    for e in batch.events:
                        seen.append((e.is_put, e.kv.key, e.kv.mod_revision))
                    if len(seen) >= 4:
                        return
            task = asyncio.create_task(consume())
            live = await c.put("/t/w/c", "3")
            await asyncio.wait_for(task, timeout=10)
            assert seen == [(True, b"/t/w/a", first.revision),
                            (True, b"/t/w/b", first.revision + 1),
                            (False, b"/t/w/a", first.revision + 2),
                            (True, b"/t/w/c", live.revision)]
            await c.compact(live.revision)
            with pytest.raises(CompactedError) as info:
                async for _ in c.watch("/t/w/", prefix=True, start_revision=first.revision):
                    pass
            assert info.value.compact_revision == live.revision
    run(body())


def test_failover_to_live_endpoint(endpoint: str) -> None:
    """A dead first endpoint is skipped for reads and for writes that never left."""
    dead = f"127.0.0.1:{free_port()}"

    async def body() -> None:
        async with Client([dead, endpoint], timeout=5) as c:
            await c.put("/t/fo/k", "v")
            assert (await c.get_one("/t/fo/k")) is not None
            assert c.endpoint == endpoint
        async with Client([dead], timeout=0.5) as c:
            with pytest.raises(UnavailableError):
                await c.get("/t/fo/k")
    run(body())
