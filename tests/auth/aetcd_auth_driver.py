"""Drive aetcd (an independent etcd client library) as users of a server whose auth is
set up (root, and alice with readwrite on ``app/``); print one JSON list of
``[label, result]``. Run in a subprocess (aetcd's protos clash with coord's):

    python -m tests.auth.aetcd_auth_driver HOST:PORT

Between its two phases it waits for a line on stdin: the test changes alice's password
with etcdctl meanwhile, so that the old client's token is no longer valid.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable
from typing import Any

import aetcd


async def outcome(fn: Awaitable[Any]) -> Any:
    try:
        got = await fn
    except Exception as err:  # noqa: BLE001 - the error is the result compared
        detail = getattr(err, "details", None) or str(err)
        return {"error": type(err).__name__, "detail": str(detail)}
    if got is None:
        return None
    value = getattr(got, "value", None)
    return {"value": value.decode()} if isinstance(value, bytes) else "ok"


async def main(endpoint: str) -> None:
    host, port = endpoint.rsplit(":", 1)
    steps: list[list[Any]] = []
    alice = aetcd.Client(host, int(port), username="alice", password="apw", timeout=5)
    steps.append(["alice put app/a", await outcome(alice.put(b"app/a", b"1"))])
    steps.append(["alice get app/a", await outcome(alice.get(b"app/a"))])
    steps.append(["alice put pub/x", await outcome(alice.put(b"pub/x", b"1"))])
    steps.append(["alice get pub/x", await outcome(alice.get(b"pub/x"))])
    watch = await alice.watch(b"app/w")
    steps.append(["alice put app/w", await outcome(alice.put(b"app/w", b"w"))])

    async def first_event() -> Any:
        async for event in watch:
            return {"kind": str(event.kind), "key": event.kv.key.decode(),
                    "value": event.kv.value.decode()}
        return None

    steps.append(["alice watch app/w", await asyncio.wait_for(first_event(), 10)])
    await watch.cancel()
    wrong = aetcd.Client(host, int(port), username="alice", password="bad", timeout=5)
    steps.append(["wrong password get", await outcome(wrong.get(b"app/a"))])
    anonymous = aetcd.Client(host, int(port), timeout=5)
    steps.append(["no credentials get", await outcome(anonymous.get(b"app/a"))])
    print("ready", flush=True)
    sys.stdin.readline()  # the test changes alice's password now
    steps.append(["old token after passwd", await outcome(alice.get(b"app/a"))])
    again = aetcd.Client(host, int(port), username="alice", password="newpw", timeout=5)
    steps.append(["new password get", await outcome(again.get(b"app/a"))])
    for c in (alice, wrong, anonymous, again):
        await c.close()
    print(json.dumps(steps), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
