"""The watch scenarios of ``aetcd_driver.py``, through aetcd's watch API and through a raw
Watch stream (catch-up batches, fragments); run in its subprocess: they import aetcd.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aetcd
import aetcd.exceptions as aexc
import grpc
from aetcd import rtypes

from tests.compat.aetcd_steps import (
    Run,
    err,
    get_res,
    hdr,
    kv,
)


async def collect(watch: Any, n: int, timeout: float = 10.0) -> list[Any]:
    out: list[Any] = []

    async def run() -> None:
        async for ev in watch:
            out.append({"kind": ev.kind, "kv": kv(ev.kv), "prev_kv": kv(ev.prev_kv)})
            if len(out) >= n:
                return

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        out.append({"timeout_after_events": len(out)})
    except aexc.ClientError as e:
        out.append(err(e))
    return out


async def s_watch(r: Run) -> None:
    c = r.c
    base = r.steps_base
    await c.put(r.k("a"), b"1")
    await c.put(r.k("b"), b"2")
    await c.put(r.k("a"), b"3")
    await c.delete(r.k("a"))
    await c.transaction(compare=[], success=[c.transactions.put(r.k("c"), b"5"),
                                             c.transactions.delete(r.k("b"))], failure=[])
    w = await c.watch_prefix(r.p, start_revision=base + 1, prev_kv=True)
    r.note("history", await collect(w, 6))
    await w.cancel()
    w2 = await c.watch(r.k("c"))  # from now
    await c.put(r.k("c"), b"live")
    await c.put(r.k("other"), b"ignored")
    await c.delete(r.k("c"))
    r.note("live single key", await collect(w2, 2))
    await w2.cancel()
    w3 = await c.watch_prefix(r.p, kind=rtypes.EventKind.DELETE)
    await c.put(r.k("x"), b"1")
    await c.delete(r.k("x"))
    r.note("delete-only filter", await collect(w3, 1))
    await w3.cancel()
    await r.step("watch_once from history", c.watch_once(r.k("x"), timeout=5,
                                                         start_revision=base + 9),
                 lambda ev: {"kind": ev.kind, "kv": kv(ev.kv)})


async def s_watch_future(r: Run) -> None:
    c = r.c
    base = r.steps_base
    w = await c.watch(r.k("k"), start_revision=base + 2)
    await c.put(r.k("k"), b"1")
    await c.put(r.k("k"), b"2")
    await c.put(r.k("k"), b"3")
    r.note("events from base+2", await collect(w, 2))
    await w.cancel()


async def s_watch_compacted(r: Run) -> None:
    c = r.c
    base = r.steps_base
    for v in (b"1", b"2", b"3"):
        await c.put(r.k("k"), v)
    await r.step("compact base+3", c.compact(base + 3, physical=True))
    try:
        w = await c.watch(r.k("k"), start_revision=base + 1)
        r.note("watch below compaction", await collect(w, 1))
    except aexc.ClientError as e:
        r.note("watch below compaction (create)", err(e))
    w = await c.watch(r.k("k"), start_revision=base + 3)
    r.note("watch at compaction revision", await collect(w, 1))
    await w.cancel()
    await r.step("compact again", c.compact(base + 3))
    await r.step("compact future", c.compact(base + 100))
    await c.put(r.k("k"), b"4")
    await r.step("compact physical", c.compact(base + 4 + 1, physical=True))
    await r.step("get after physical compaction", c.get(r.k("k")), get_res)


def wresp(w: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"header": hdr(w.header), "watch_id": w.watch_id}
    for f in ("created", "canceled", "fragment"):
        if getattr(w, f):
            out[f] = True
    if w.compact_revision:
        out["compact_revision"] = w.compact_revision
    if w.cancel_reason:
        out["cancel_reason"] = w.cancel_reason
    if w.events:
        out["events"] = [{"type": "DELETE" if e.type == 1 else "PUT", "kv": kv(e.kv),
                          "prev_kv": kv(e.prev_kv) if e.HasField("prev_kv") else None}
                         for e in w.events]
    return out


class RawWatch:
    """One raw Watch stream through aetcd's generated stub: requests in, responses
    collected with a bounded wait (no client-side logic in between)."""

    def __init__(self, client: aetcd.Client) -> None:
        self.q: asyncio.Queue[Any] = asyncio.Queue()
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        stub = aetcd.rpc.WatchStub(client.channel)
        self.call = stub.Watch(self._requests())
        self.reader = asyncio.create_task(self._read())

    async def _requests(self) -> Any:
        while True:
            req = await self.q.get()
            if req is None:
                return
            yield req

    async def _read(self) -> None:
        try:
            async for resp in self.call:
                await self.responses.put(resp)
        except grpc.aio.AioRpcError as e:
            await self.responses.put(e)

    async def send(self, req: Any, expect: int, timeout: float = 5.0) -> list[Any]:
        if req is not None:
            await self.q.put(req)
        got: list[Any] = []
        for _ in range(expect):
            try:
                r = await asyncio.wait_for(self.responses.get(), timeout)
            except TimeoutError:
                got.append({"timeout": f"expected {expect} responses, got {len(got)}"})
                break
            got.append({"grpc error": r.code().name, "detail": r.details()}
                       if isinstance(r, grpc.aio.AioRpcError) else wresp(r))
        # responses for different watchers may come in any order (etcd notifies watchers
        # in map order); per watcher the arrival order is kept (stable sort)
        return sorted(got, key=lambda x: x.get("watch_id", 0))

    async def close(self) -> None:
        self.call.cancel()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader


def create(key: bytes, **kw: Any) -> Any:
    return aetcd.rpc.WatchRequest(create_request=aetcd.rpc.WatchCreateRequest(key=key, **kw))


async def s_raw_watch(r: Run) -> None:
    """Watch protocol details (appendix B of the compat notes), on one raw stream."""
    c, rpc, base = r.c, aetcd.rpc, r.steps_base
    end = r.p[:-1] + bytes([r.p[-1] + 1])
    w = RawWatch(c)
    try:
        async def step(label: str, req: Any, expect: int) -> None:
            r.note(label, await w.send(req, expect))

        await c.put(r.k("a"), b"0")  # base+1
        await step("create key a (auto id)", create(r.k("a")), 1)
        await step("create prefix, prev_kv", create(r.p, range_end=end, prev_kv=True), 1)
        await step("create explicit id 100, NOPUT",
                   create(r.k("a"), watch_id=100,
                          filters=[rpc.WatchCreateRequest.FilterType.NOPUT]), 1)
        await step("create duplicate id 100", create(r.k("a"), watch_id=100), 1)
        await step("create empty range (end < key)", create(r.k("b"), range_end=r.k("a")), 1)
        await step("create after explicit 100 (next auto id)", create(r.p, range_end=end), 1)
        await step("create history from base+1", create(r.k("a"), start_revision=base + 1), 2)
        await step("create future start_revision base+3",
                   create(r.k("a"), start_revision=base + 3), 1)
        await c.put(r.k("a"), b"1")  # base+2
        r.note("after put a=1 (watchers 0,1,2,3)", await w.send(None, 4))
        await c.transaction(compare=[], success=[c.transactions.put(r.k("b"), b"B"),
                                                 c.transactions.delete(r.k("a"))], failure=[])
        r.note("after txn put b + del a (base+3)", await w.send(None, 6))
        await step("progress request", rpc.WatchRequest(
            progress_request=rpc.WatchProgressRequest()), 1)
        await step("cancel 100", rpc.WatchRequest(
            cancel_request=rpc.WatchCancelRequest(watch_id=100)), 1)
        await w.q.put(rpc.WatchRequest(cancel_request=rpc.WatchCancelRequest(watch_id=555)))
        await step("cancel unknown 555, then progress (only the progress answers)",
                   rpc.WatchRequest(progress_request=rpc.WatchProgressRequest()), 1)
        await step("create key='' range_end=\\0 (all keys) from now",
                   create(b"", range_end=b"\0"), 1)
        await c.put(r.k("c"), b"x")  # base+4
        r.note("after put c=x (watchers 1, 2, 5)", await w.send(None, 3))
        await c.put(r.k("c"), b"y")  # base+5
        r.note("after put c=y (watchers 1, 2, 5)", await w.send(None, 3))
        await c.compact(base + 5, physical=True)
        await step("create at compacted revision (base+4)",
                   create(r.k("c"), start_revision=base + 4), 2)
        await step("create at the compact revision exactly, prev_kv",
                   create(r.k("c"), start_revision=base + 5, prev_kv=True), 2)
        await step("final progress (nothing else pending)", rpc.WatchRequest(
            progress_request=rpc.WatchProgressRequest()), 1)
    finally:
        await w.close()


async def catchup_shapes(r: Run, req: Any, want: int) -> list[Any]:
    """Open a raw stream with ``req``; collect response shapes until ``want`` events."""
    w = RawWatch(r.c)
    base = r.steps_base
    try:
        await w.q.put(req)
        shapes: list[Any] = []
        events = 0
        while events < want:
            try:
                resp = await asyncio.wait_for(w.responses.get(), 10)
            except TimeoutError:
                shapes.append({"timeout after events": events})
                break
            if isinstance(resp, grpc.aio.AioRpcError):
                shapes.append({"grpc error": resp.code().name})
                break
            revs = [e.kv.mod_revision for e in resp.events]
            events += len(revs)
            shapes.append({"created": resp.created, "events": len(revs),
                           "distinct revisions": len(set(revs)),
                           "first event at R+": revs[0] - base if revs else None,
                           "last event at R+": revs[-1] - base if revs else None,
                           "revision": resp.header.revision})
        return shapes
    finally:
        await w.close()


async def s_watch_catchup_batches(r: Run) -> None:
    """Watchers 1100+ revisions behind: how the catch-up is split into responses.
    Ops: 1100 puts over keys k0..k6, every 10th op a delete instead, and every 3rd a
    txn of two puts (two events, one revision)."""
    c, t = r.c, r.c.transactions
    n = 1100
    puts = dels = 0
    k0_events = 0
    for i in range(n):
        key = r.k(f"k{i % 7}")
        k0_events += i % 7 == 0
        if i % 10 == 9:
            if await c.get(key) is not None:
                await c.delete(key)
                dels += 1
            else:
                await c.put(key, b"re")
                puts += 1
        elif i % 3 == 2:
            await c.transaction(compare=[], success=[t.put(key, str(i).encode()),
                                                     t.put(r.k("pair"), b"p")], failure=[])
            puts += 2
        else:
            await c.put(key, str(i).encode())
            puts += 1
    rpc = aetcd.rpc
    end = r.p[:-1] + bytes([r.p[-1] + 1])
    all_events = puts + dels
    r.note("ops", {"events": all_events})
    start = r.steps_base + 1
    r.note("prefix watcher", await catchup_shapes(
        r, create(r.p, range_end=end, start_revision=start), all_events))
    r.note("NODELETE-filtered prefix watcher", await catchup_shapes(
        r, create(r.p, range_end=end, start_revision=start,
                  filters=[rpc.WatchCreateRequest.FilterType.NODELETE]), puts))
    r.note("single key k0 watcher", await catchup_shapes(
        r, create(r.k("k0"), start_revision=start), k0_events))


async def s_watch_fragment(r: Run) -> None:
    """One revision whose watch response exceeds 2 MiB: 6 keys x 500 KiB deleted at once,
    watched with prev_kv and NOPUT, with and without ``fragment``."""
    c, rpc = r.c, aetcd.rpc
    end = r.p[:-1] + bytes([r.p[-1] + 1])
    streams = {}
    for label, frag in (("fragment=true", True), ("fragment=false", False)):
        w = RawWatch(c)
        r.note(f"create {label}", await w.send(create(
            r.p, range_end=end, prev_kv=True, fragment=frag,
            filters=[rpc.WatchCreateRequest.FilterType.NOPUT]), 1))
        streams[label] = w
    try:
        for i in range(6):
            await c.put(r.k(f"big{i}"), bytes([65 + i]) * (500 * 1024))
        await r.step("delete_prefix", c.delete_prefix(r.p),
                     lambda d: {"deleted": d.deleted})
        for label, w in streams.items():
            shapes = []
            events = 0
            while events < 6:
                try:
                    resp = await asyncio.wait_for(w.responses.get(), 10)
                except TimeoutError:
                    shapes.append({"timeout after events": events})
                    break
                if isinstance(resp, grpc.aio.AioRpcError):
                    shapes.append({"grpc error": resp.code().name, "detail": resp.details()})
                    break
                events += len(resp.events)
                shapes.append({"events": len(resp.events), "fragment": resp.fragment,
                               "revision": resp.header.revision,
                               "prev_kv sizes": [len(e.prev_kv.value) for e in resp.events]})
            r.note(f"responses {label}", shapes)
    finally:
        for w in streams.values():
            await w.close()
