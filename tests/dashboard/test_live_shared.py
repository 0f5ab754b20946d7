"""The dashboard's store load does not grow with its viewers: one watch per prefix for the
whole process, however many event streams are open; a subscriber that falls behind is
dropped, not buffered without bound."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web

from coord.client import Client
from scheduler import keys
from scheduler.dashboard.app import make_app
from scheduler.dashboard.hub import QUEUE_MAX, Hub
from tests.helpers.procs import ProcessGroup, free_port, start_coord

STREAMS = 20


class CountingClient(Client):
    """A store client that notes every watch it opens."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.watched: list[str] = []

    def watch(self, key: Any, **kw: Any) -> Any:  # type: ignore[override]
        self.watched.append(key if isinstance(key, str) else key.decode())
        return super().watch(key, **kw)


async def _next_event(resp: aiohttp.ClientResponse, name: str) -> dict[str, Any]:
    event = ""
    while True:
        line = (await resp.content.readline()).decode().rstrip("\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:") and event == name:
            data: dict[str, Any] = json.loads(line[5:])
            return data


def test_many_streams_share_one_watch_per_prefix(procs: ProcessGroup) -> None:
    endpoint = start_coord(procs).endpoint

    async def body() -> None:
        async with CountingClient([endpoint], timeout=5) as client:
            runner = web.AppRunner(make_app(client), handle_signals=False)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            base = f"http://127.0.0.1:{port}/api/v1"
            try:
                async with aiohttp.ClientSession() as http:
                    streams = [await http.get(f"{base}/events?topics=locks")
                               for _ in range(STREAMS)]
                    for resp in streams:
                        await asyncio.wait_for(_next_event(resp, "ready"), 10)
                    for _ in range(3):  # pages polled meanwhile: no watch either
                        async with http.get(f"{base}/jobs") as r:
                            assert r.status == 200
                        async with http.get(f"{base}/locks") as r:
                            assert r.status == 200
                    await client.put(keys.lock_key("j1"), b"held by hand")
                    got = await asyncio.wait_for(asyncio.gather(
                        *(_next_event(r, "lock") for r in streams)), 10)
                    assert [g["job"] for g in got] == ["j1"] * STREAMS
                    for resp in streams:
                        resp.close()
            finally:
                await runner.cleanup()
            assert sorted(client.watched) == sorted([
                keys.JOBS, keys.SUSPENSIONS, keys.LOCKS, keys.WORKERS, keys.RUNS,
                "/cron/output/"])
    asyncio.run(body())


def test_a_subscriber_that_falls_behind_is_dropped() -> None:
    async def body() -> None:
        hub = Hub()
        slow = hub.subscribe(frozenset({"locks"}))
        other = hub.subscribe(frozenset({"jobs"}))
        for i in range(QUEUE_MAX + 5):
            hub.publish("lock", f"j{i}", {"job": f"j{i}"})
        assert slow.overflowed and len(hub) == 1
        assert slow.queue.qsize() == QUEUE_MAX
        items = [slow.queue.get_nowait() for _ in range(QUEUE_MAX)]
        assert items[-1][0] == "overflow"  # its stream ends; EventSource reconnects
        assert other.queue.empty() and not other.overflowed
    asyncio.run(body())


class CompactedOnce(Client):
    """A client whose first watch of the jobs asks for a revision the store compacted
    away — as a dashboard that lost its stream for longer than the store keeps history."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.job_reads = 0
        self.compacted_watch = False

    async def range(self, req: Any) -> Any:
        if req.key.startswith(keys.JOBS.encode()):
            self.job_reads += 1
        return await super().range(req)

    def watch(self, key: Any, **kw: Any) -> Any:  # type: ignore[override]
        if key == keys.JOBS and not self.compacted_watch:
            self.compacted_watch = True
            kw["start_revision"] = 2
        return super().watch(key, **kw)


def _spec(name: str) -> str:
    return json.dumps({"name": name, "schedule": "0 0 1 1 *", "command": "true"})


def test_a_compacted_watch_reads_the_prefix_again(procs: ProcessGroup) -> None:
    from scheduler.dashboard.model import ReadModel

    endpoint = start_coord(procs).endpoint

    async def body() -> None:
        async with CompactedOnce([endpoint], timeout=5) as client:
            for name in ("a", "b", "gone"):
                await client.put(keys.job_key(name), _spec(name))
            await client.delete(keys.job_key("gone"))
            rev = (await client.put(keys.job_key("b"), _spec("b"))).header.revision
            await client.compact(rev)
            model = ReadModel(client)
            await model.start()
            try:
                assert await model.wait_ready(10)
                await client.put(keys.job_key("c"), _spec("c"))
                for _ in range(200):
                    if "c" in model.jobs:
                        break
                    await asyncio.sleep(0.05)
                assert list(model.jobs) == ["a", "b", "c"]
                assert client.compacted_watch and client.job_reads >= 2
            finally:
                await model.stop()
    asyncio.run(body())
