"""The outbox in the record txns and the dead-man decisions, against a real coord member:
each event is written exactly when its record is, and two workers deciding the same dead-man
change at once record it once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from coord.client import Client
from coord.server.server import CoordServer
from scheduler import keys
from scheduler.claim import ClaimStore, Identity, RunRecord
from scheduler.notify import OUTBOX, run_ops
from scheduler.notify_deadman import DeadMan
from scheduler.spec import JobSpec, load_jobs_text
from tests.helpers.member import member_config

JOBS = """\
defaults:
  notify:
    - on: [failure, lost, missed, skipped, overdue, recovered]
      webhook: http://127.0.0.1:9/hook
jobs:
  - {name: job, schedule: "@hourly", command: "true", expect: {succeed_within: 60s}}
"""
OCC = ["20261206T120000Z", "20261206T130000Z", "20261206T140000Z"]


def _run(tmp_path: Path, body: Callable[[Client, JobSpec], Awaitable[None]]) -> None:
    (spec,) = load_jobs_text(JOBS)

    async def main() -> None:
        config = member_config(tmp_path / "n1")
        server = CoordServer(config)
        await server.start()
        try:
            async with Client([config.listen_client], channels=server.channels()) as c:
                async with asyncio.timeout(20):
                    await body(c, spec)
        finally:
            await server.stop()

    asyncio.run(main())


async def _outbox(c: Client) -> dict[str, dict[str, object]]:
    res = await c.get(OUTBOX, prefix=True)
    return {kv.key.decode()[len(OUTBOX):]: json.loads(kv.value)["body"] for kv in res.kvs}


def test_record_txns_write_their_events_once(tmp_path: Path) -> None:
    async def body(c: Client, spec: JobSpec) -> None:
        lease = (await c.grant(30)).id
        store = ClaimStore(c, Identity(worker="w1", lease=lease))
        store.outbox = lambda rec: run_ops(spec, rec)
        assert await store.record_missed("job", OCC[0], status="skipped")
        assert not await store.record_missed("job", OCC[0])  # taken: no second event
        claim = await store.claim("job", OCC[1], exclusive=True)
        assert claim is not None
        assert await store.finish(claim, status="failed", exit_code=3, output_tail="boom\n",
                                  started_at=time.time() - 1, finished_at=time.time())
        claim2 = await store.claim("job", OCC[2], exclusive=True)
        assert claim2 is not None
        await c.revoke(lease)  # the lock goes with the session: the run is lost
        lost = await store.mark_lost("job", OCC[2], "its worker's session expired",
                                     run_id=claim2.record.run_id, token=None)
        assert lost is not None
        assert not await store.finish(claim2, status="failed")  # fenced out: no event
        got = await _outbox(c)
        assert sorted(got) == [f"job/{OCC[0]}/skipped.0", f"job/{OCC[1]}/failure.0",
                               f"job/{OCC[2]}/lost.0"]
        failure = got[f"job/{OCC[1]}/failure.0"]
        assert failure["exit_code"] == 3 and failure["output_tail"] == "boom\n"
        assert failure["run_id"] == claim.record.run_id and failure["worker"] == "w1"

    _run(tmp_path, body)


def test_dead_man_two_deciders_fire_each_event_once(tmp_path: Path) -> None:
    async def body(c: Client, spec: JobSpec) -> None:
        a, b = DeadMan(c, "a", "h", lambda: [spec]), DeadMan(c, "b", "h", lambda: [spec])
        t0 = time.time()
        assert await a.check(spec, t0) is None  # first look: the clock starts
        assert await a.check(spec, t0 + 30) is None
        fired = await asyncio.gather(a.check(spec, t0 + 61), b.check(spec, t0 + 61))
        assert sorted(map(str, fired)) == ["None", "overdue"]
        assert await b.check(spec, t0 + 200) is None  # still overdue: nothing new
        # A restarted worker (a new DeadMan) reads the state back: no second overdue.
        assert await DeadMan(c, "c", "h", lambda: [spec]).check(spec, t0 + 300) is None
        ok = RunRecord(job="job", occurrence=OCC[0], status="succeeded", run_id="r1",
                       started_at=t0 + 299, finished_at=t0 + 300)
        await c.put(keys.run_key("job", OCC[0]), ok.encode())
        fired = await asyncio.gather(a.check(spec, t0 + 301), b.check(spec, t0 + 301))
        assert sorted(map(str, fired)) == ["None", "recovered"]
        assert await a.check(spec, t0 + 330) is None
        events = sorted(k.split("/")[-1] for k in await _outbox(c))
        assert events == ["overdue.0", "recovered.0"]
        # Overdue again only after a full window without a success.
        assert await a.check(spec, t0 + 359) is None
        assert await a.check(spec, t0 + 361) == "overdue"

    _run(tmp_path, body)
