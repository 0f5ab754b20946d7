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
