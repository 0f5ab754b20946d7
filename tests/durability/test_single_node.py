"""Promise 4 on one member: kill -9 mid-load loses nothing acknowledged, ever.

Each round starts ``raftcron coord serve``, runs concurrent writers (puts and txns with
unique keys) plus a reader, kills the server with SIGKILL at a random instant, restarts it
on the same data dir and checks:

* every acknowledged write is there with its value and its revision;
* every value a reader saw before the crash is still there (nothing visible-then-gone);
* the store's revision did not go back.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from coord.client import Client, ClientError, Compare, put
from tests.helpers.procs import ProcessGroup, free_port, start_coord

ROUNDS = 5
WRITERS = 8


@dataclass
class Ledger:
    acked: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)
    seen: dict[bytes, bytes] = field(default_factory=dict)
    max_rev: int = 0


async def load(endpoint: str, ledger: Ledger, stop: asyncio.Event, round_no: int) -> None:
    async def writer(w: int) -> None:
        async with Client([endpoint], timeout=2) as c:
            i = 0
            while not stop.is_set():
                key = f"/dur/{round_no}/{w}/{i:06d}".encode()
                value = f"v{round_no}-{w}-{i}".encode()
                try:
                    if i % 3 == 0:
                        r = await c.txn([Compare.create(key) == 0], [put(key, value)], [])
                        assert r.succeeded, "a fresh key's create==0 guard must hold"
                        rev = r.revision
                    else:
                        rev = (await c.put(key, value)).revision
                except ClientError:
                    return  # the server died: this write's outcome is unknown
                ledger.acked[key] = (value, rev)
                ledger.max_rev = max(ledger.max_rev, rev)
                i += 1

    async def reader() -> None:
        async with Client([endpoint], timeout=2) as c:
            while not stop.is_set():
                try:
                    r = await c.get(f"/dur/{round_no}/".encode(), prefix=True, limit=50)
                except ClientError:
                    return
                for kv in r.kvs:
                    ledger.seen[kv.key] = kv.value

    tasks = [asyncio.create_task(writer(w)) for w in range(WRITERS)]
    tasks.append(asyncio.create_task(reader()))
    await asyncio.gather(*tasks)


async def run_round(procs: ProcessGroup, data: Path, cport: int, pport: int,
                    ledger: Ledger, round_no: int, rng: random.Random) -> None:
    server = start_coord(procs, data_dir=data, cport=cport, pport=pport)
    stop = asyncio.Event()
    task = asyncio.create_task(load(server.endpoint, ledger, stop, round_no))
    # Wait until the load is really flowing, then kill at a random instant.
    while len(ledger.acked) < 50 * (round_no + 1):
        await asyncio.sleep(0.01)
    await asyncio.sleep(rng.uniform(0.05, 0.6))
    server.kill9()
    await asyncio.wait_for(task, timeout=30)
    stop.set()


async def verify(endpoint: str, ledger: Ledger) -> None:
    async with Client([endpoint], timeout=10) as c:
        r = await c.get(b"/dur/", prefix=True)
        stored = {kv.key: (kv.value, kv.mod_revision) for kv in r.kvs}
        assert r.revision >= ledger.max_rev, "the revision went backwards after a crash"
    missing = [k for k in ledger.acked if k not in stored]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
    wrong = [k for k, (v, rev) in ledger.acked.items() if stored[k] != (v, rev)]
    changed = [(k, ledger.acked[k], stored[k]) for k in wrong[:3]]
    assert not wrong, f"acknowledged writes changed: {changed}"
    vanished = [k for k, v in ledger.seen.items() if stored.get(k, (None,))[0] != v]
    assert not vanished, f"values seen before the crash are gone: {vanished[:3]}"


@pytest.mark.slow
def test_kill9_mid_load_loses_no_acknowledged_write(procs: ProcessGroup, tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    data = tmp_path / "coord-data"
    cport, pport = free_port(), free_port()
    ledger = Ledger()

    async def body() -> None:
        for round_no in range(ROUNDS):
            await run_round(procs, data, cport, pport, ledger, round_no, rng)
            restarted = start_coord(procs, data_dir=data, cport=cport, pport=pport)
            await verify(restarted.endpoint, ledger)
            restarted.kill9()

    print(f"durability seed={seed}")
    asyncio.run(body())
    assert len(ledger.acked) >= 250, "the load was too small to mean anything"
