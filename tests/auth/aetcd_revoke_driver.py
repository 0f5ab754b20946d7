"""Drive aetcd (an independent etcd client library) as alice with an open watch on
``app/`` while the test revokes her permission; print one JSON object: the values her
watch saw before the revoke, those it saw in a stated interval after it, and what a read
answers after it. Run in a subprocess (aetcd's protos clash with coord's):

    python -m tests.auth.aetcd_revoke_driver HOST:PORT SECONDS

It prints ``ready`` once the watch delivers, then waits for a line on stdin (the test
revokes the permission and writes ``app/after`` meanwhile), then observes SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aetcd


async def main(endpoint: str, seconds: float) -> None:
    host, port = endpoint.rsplit(":", 1)
    alice = aetcd.Client(host, int(port), username="alice", password="apw", timeout=5)
    seen: list[str] = []
    watch = await alice.watch(b"app/", range_end=b"app0")

    async def consume() -> None:
        async for event in watch:
            seen.append(event.kv.value.decode())
    task = asyncio.ensure_future(consume())
    while not seen:  # the watch is open and delivers
        await alice.put(b"app/before", b"before")
        await asyncio.wait([task], timeout=0.3)
    before = list(seen)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await asyncio.wait([task], timeout=seconds)
    after = seen[len(before):]
    read: Any
    try:
        await alice.get(b"app/before")
        read = "ok"
    except Exception as err:  # noqa: BLE001 - the error is the result
        read = str(getattr(err, "details", None) or err)
    task.cancel()
    await alice.close()
    print(json.dumps({"before": sorted(set(before)), "after": after, "read": read}),
          flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
