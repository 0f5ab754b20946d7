"""Drive the independent client library ``aetcd`` against one endpoint; print JSON.

Run in a SUBPROCESS (aetcd's generated protos clash with coord's in one protobuf
descriptor pool):

    python tests/compat/aetcd_driver.py --endpoint 127.0.0.1:2379 --prefix P scen1 scen2 ...

Prints ``{"<scenario>": {"base": <revision before>, "steps": [[label, result], ...]}}``.
Results keep raw revisions and ids under field names the harness's normaliser knows
(``revision``, ``create_revision``, ``mod_revision``, ``compact_revision``, ``ID``,
``lease``, ``member_id``, ``cluster_id``, ``raft_term``, ``ttl`` next to
``granted-ttl``); the test normalises them exactly as it does etcdctl's ``-w json``.
Errors become ``{"error": <aetcd exception class>, "detail": <server message>}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aetcd
import aetcd.exceptions as aexc
import grpc
from aetcd import rtypes


def hdr(h: Any) -> dict[str, int]:
    return {"cluster_id": h.cluster_id, "member_id": h.member_id, "revision": h.revision,
            "raft_term": h.raft_term}


def kv(k: Any) -> dict[str, Any] | None:
    if k is None:
        return None
    return {"key": bytes(k.key).decode("utf-8", "replace"),
            "value": bytes(k.value).decode("utf-8", "replace"),
            "create_revision": k.create_revision, "mod_revision": k.mod_revision,
            "version": k.version, "lease": k.lease}


def get_range(r: Any) -> dict[str, Any]:
    return {"header": hdr(r.header), "kvs": [kv(x) for x in r], "more": r.more, "count": r.count}


def err(e: BaseException) -> dict[str, Any]:
    if isinstance(e, aexc.RevisionCompactedError):
        return {"error": type(e).__name__, "compact_revision": e.compacted_revision}
    detail = str(e)
    return {"error": type(e).__name__, "detail": detail}


class Run:
    def __init__(self, client: aetcd.Client, prefix: str) -> None:
        self.c = client
        self.p = prefix.encode()
        self.steps: list[list[Any]] = []
        self.steps_base = 0  # the store revision before the scenario's first step
        self.endpoint = ""

    def k(self, name: str) -> bytes:
        return self.p + name.encode()

    async def step(self, label: str, aw: Awaitable[Any],
                   conv: Callable[[Any], Any] = lambda x: x) -> Any:
        try:
            res = await aw
        except aexc.ClientError as e:
            self.steps.append([label, err(e)])
            return None
        except grpc.aio.AioRpcError as e:  # raw stub calls
            self.steps.append([label, {"error": e.code().name, "detail": e.details()}])
            return None
        self.steps.append([label, conv(res)])
        return res

    def note(self, label: str, value: Any) -> None:
        self.steps.append([label, value])

    async def base(self) -> int:
        r = await self.c.get_prefix(self.p + b"\x00base")
        return int(r.header.revision)


def put_res(r: Any) -> dict[str, Any]:
    return {"header": hdr(r.header), "prev_kv": kv(r.prev_kv)}


def del_res(r: Any) -> dict[str, Any] | None:
    if r is None:
        return None
    out: dict[str, Any] = {"header": hdr(r.header), "deleted": r.deleted}
    if hasattr(r, "prev_kv"):
        out["prev_kv"] = kv(r.prev_kv)
    else:
        out["prev_kvs"] = [kv(x) for x in r.prev_kvs]
    return out


def get_res(r: Any) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"header": hdr(r.header), "kv": kv(r)}


def txn_res(r: Any) -> dict[str, Any]:
    ok, responses = r
    out = []
    for resp in responses:
        if isinstance(resp, list):
            out.append({"range": [[bytes(v).decode(), kv(g)] for v, g in resp]})
        else:
            out.append(raw_op(resp))
    return {"succeeded": ok, "responses": out}


def raw_op(resp: Any) -> dict[str, Any]:
    which = resp.WhichOneof("response")
    sub = getattr(resp, which)
    if which == "response_txn":
        return {which: {"header_revision": sub.header.revision, "succeeded": sub.succeeded,
                        "responses": [raw_op(x) for x in sub.responses]}}
    if which == "response_range":
        return {which: {"revision": sub.header.revision, "kvs": [kv(x) for x in sub.kvs],
                        "count": sub.count, "more": sub.more}}
    if which == "response_delete_range":
        return {which: {"revision": sub.header.revision, "deleted": sub.deleted,
                        "prev_kvs": [kv(x) for x in sub.prev_kvs]}}
    return {which: {"revision": sub.header.revision,
                    "prev_kv": kv(sub.prev_kv) if sub.HasField("prev_kv") else None}}


# --------------------------------------------------------------------------- scenarios


async def s_put_get(r: Run) -> None:
    c = r.c
    await r.step("put", c.put(r.k("k"), b"v1"), put_res)
    await r.step("put prev_kv", c.put(r.k("k"), b"v2", prev_kv=True), put_res)
    await r.step("put same value", c.put(r.k("k"), b"v2", prev_kv=True), put_res)
    await r.step("get", c.get(r.k("k")), get_res)
    await r.step("get serializable", c.get(r.k("k"), serializable=True), get_res)
    await r.step("get missing", c.get(r.k("missing")), get_res)
    await r.step("put non-ascii", c.put(r.k("ключ"), "значение".encode()), put_res)
    await r.step("get non-ascii", c.get(r.k("ключ")), get_res)
    await r.step("put binary key/value", c.put(r.p + b"bin\x00\xff\x01", b"\x00\xfe\xff"), put_res)
    await r.step("get binary", c.get(r.p + b"bin\x00\xff\x01"),
                 lambda g: None if g is None else {"value": bytes(g.value).hex(),
                                                   "key": bytes(g.key).hex()})
    await r.step("get_prefix ending in 0xff", c.get_prefix(r.p + b"bin\x00\xff"),
                 lambda g: [bytes(x.key).hex() for x in g])


async def s_prefix_range(r: Run) -> None:
    c = r.c
    for name, v in [("c", b"1"), ("a", b"3"), ("b", b"2"), ("e", b"5"), ("d", b"4")]:
        await c.put(r.k(name), v)
    await c.put(r.p.rstrip(b"/") + b"0", b"outside")
    await r.step("get_prefix", c.get_prefix(r.p), get_range)
    await r.step("get_prefix desc create", c.get_prefix(r.p, sort_order="descend",
                                                        sort_target="create"), get_range)
    await r.step("get_prefix asc value keys_only",
                 c.get_prefix(r.p, sort_order="ascend", sort_target="value", keys_only=True),
                 get_range)
    await r.step("get_range b..d", c.get_range(r.k("b"), r.k("d")), get_range)
    await r.step("get_range d..b (empty)", c.get_range(r.k("d"), r.k("b")), get_range)
    await r.step("get_range desc mod", c.get_range(r.k("a"), r.k("z"), sort_order="descend",
                                                   sort_target="mod"), get_range)


async def s_delete(r: Run) -> None:
    c = r.c
    for name in "abcdef":
        await c.put(r.k(name), name.encode())
    await r.step("delete prev_kv", c.delete(r.k("a"), prev_kv=True), del_res)
    await r.step("delete missing", c.delete(r.k("a")), del_res)
    await r.step("delete_range b..d prev_kv", c.delete_range(r.k("b"), r.k("d"), prev_kv=True),
                 del_res)
    await r.step("delete_prefix", c.delete_prefix(r.p), del_res)
    await r.step("delete_prefix again", c.delete_prefix(r.p), del_res)
    await r.step("get_prefix", c.get_prefix(r.p), get_range)


async def s_txn(r: Run) -> None:
    c = r.c
    t = c.transactions
    await c.put(r.k("k"), b"v1")
    await c.put(r.k("k"), b"v2")
    base = r.steps_base
    cases = [
        ("value ==", [t.value(r.k("k")) == b"v2"]),
        ("value != ", [t.value(r.k("k")) != b"v2"]),
        ("value on missing", [t.value(r.k("missing")) != b"x"]),
        ("version == 2", [t.version(r.k("k")) == 2]),
        ("version > 5", [t.version(r.k("k")) > 5]),
        ("create == 0 on missing", [t.create(r.k("missing")) == 0]),
        ("mod == base+2", [t.mod(r.k("k")) == base + 2]),
        ("mod < base+2", [t.mod(r.k("k")) < base + 2]),
        ("two compares", [t.version(r.k("k")) == 2, t.value(r.k("k")) == b"v1"]),
    ]
    for label, compare in cases:
        await r.step(f"txn {label}", c.transaction(
            compare=compare,
            success=[t.get(r.k("k"))],
            failure=[t.put(r.k("failed"), label.encode())]), txn_res)
    await r.step("txn multi-op", c.transaction(
        compare=[t.create(r.k("new")) == 0],
        success=[t.put(r.k("new"), b"n"), t.put(r.k("new2"), b"m"), t.delete(r.k("failed")),
                 t.get(r.k("new"))],
        failure=[]), txn_res)
    await r.step("txn duplicate key", c.transaction(
        compare=[], success=[t.put(r.k("d"), b"1"), t.put(r.k("d"), b"2")], failure=[]),
        txn_res)
    await c.put(r.k("rng/a"), b"x")
    await c.put(r.k("rng/b"), b"x")
    await c.put(r.k("rng/b"), b"y")
    await r.step("txn compare over a range: all match", c.transaction(
        compare=[t.version(r.k("rng/"), r.k("rng0")) > 0], success=[], failure=[]), txn_res)
    await r.step("txn compare over a range: one fails", c.transaction(
        compare=[t.version(r.k("rng/"), r.k("rng0")) == 1], success=[], failure=[]),
        txn_res)
    await r.step("txn value compare over a range", c.transaction(
        compare=[t.value(r.k("rng/"), r.k("rng0")) == b"x"], success=[], failure=[]),
        txn_res)
    await r.step("txn put + covering delete-range", c.transaction(
        compare=[], success=[t.put(r.k("d/1"), b"1"), t.delete(r.k("d/"), r.k("d0"))],
        failure=[]), txn_res)
    await r.step("nested txn", c.transaction(
        compare=[t.version(r.k("k")) == 2],
        success=[t.put(r.k("outer"), b"o"),
                 t.txn(compare=[t.create(r.k("outer")) == 0],  # start state: true
                       success=[t.put(r.k("inner"), b"i"), t.get(r.k("outer"))],
                       failure=[t.put(r.k("inner-failed"), b"x")])],
        failure=[]), txn_res)
    await r.step("nested txn duplicate with outer", c.transaction(
        compare=[], success=[t.put(r.k("n"), b"1"),
                             t.txn(compare=[], success=[t.put(r.k("n"), b"2")], failure=[])],
        failure=[]), txn_res)
    await r.step("replace ok", c.replace(r.k("k"), b"v2", b"v3"))
    await r.step("replace stale", c.replace(r.k("k"), b"v2", b"v4"))
    await r.step("get_prefix", c.get_prefix(r.p), get_range)


async def s_lease(r: Run) -> None:
    c = r.c
    lease = await r.step("grant 60", c.lease(60), lambda x: {"ID": x.id, "TTL": x.ttl})
    if lease is None:
        return
    await r.step("put with lease", c.put(r.k("a"), b"1", lease=lease), put_res)
    await r.step("put with lease id", c.put(r.k("b"), b"2", lease=lease.id), put_res)
    await r.step("get", c.get(r.k("a")), get_res)
    await r.step("ttl keys", c.get_lease_info(lease.id, keys=True), ttl_res)
    await r.step("granted_ttl", lease.granted_ttl())
    await r.step("keys", lease.keys(), lambda ks: sorted(bytes(k).decode() for k in ks))
    await r.step("revoke", lease.revoke())
    await r.step("get after revoke", c.get_prefix(r.p), get_range)
    await r.step("ttl after revoke", c.get_lease_info(lease.id, keys=True), ttl_res)
    await r.step("revoke again", c.revoke_lease(lease.id))
    await r.step("grant explicit id", c.lease(30, lease_id=7_000_123),
                 lambda x: {"explicit id honoured": x.id == 7_000_123, "TTL": x.ttl})
    await r.step("grant duplicate id", c.lease(30, lease_id=7_000_123),
                 lambda x: {"ID": x.id, "TTL": x.ttl})
    await r.step("grant ttl 1 (min ttl)", c.lease(1), lambda x: {"ID": x.id, "TTL": x.ttl})
    await r.step("grant too large", c.lease(9_000_000_001), lambda x: {"ID": x.id})
    await r.step("put with missing lease", c.put(r.k("c"), b"3", lease=424242), put_res)
    await r.step("revoke explicit", c.revoke_lease(7_000_123))


def ttl_res(x: Any) -> dict[str, Any]:
    return {"header": hdr(x.header), "ID": x.ID, "ttl": x.TTL, "granted-ttl": x.grantedTTL,
            "keys": sorted(bytes(k).decode() for k in x.keys)}


def ka_res(x: Any) -> dict[str, Any] | None:
    if x is None:
        return None
    return {"header": hdr(x.header), "ID": x.ID, "TTL": x.TTL}


async def s_keepalive(r: Run) -> None:
    c = r.c
    lease = await r.step("grant 30", c.lease(30), lambda x: {"ID": x.id, "TTL": x.ttl})
    if lease is None:
        return
    await r.step("refresh", lease.refresh(), ka_res)
    await r.step("refresh again", c.refresh_lease(lease.id), ka_res)
    await r.step("remaining", lease.remaining_ttl(), lambda t: "<plausible>" if 27 <= t <= 29
                 else t)
    await lease.revoke()
    await r.step("refresh revoked", c.refresh_lease(lease.id), ka_res)


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


async def s_lock(r: Run) -> None:
    c = r.c
    l1 = c.lock(r.k("lock"), ttl=10)
    l2 = c.lock(r.k("lock"), ttl=10)
    await r.step("l1 acquire", l1.acquire(timeout=5))
    await r.step("l1 is_acquired", l1.is_acquired())
    await r.step("l2 acquire (held, 1 s)", l2.acquire(timeout=1))
    await r.step("l2 is_acquired", l2.is_acquired())
    waiter = asyncio.create_task(l2.acquire(timeout=10))
    await r.step("l1 release", l1.release())
    await r.step("l2 acquire after release", waiter)
    await r.step("l2 is_acquired", l2.is_acquired())
    await r.step("l1 release again", l1.release())
    await r.step("l2 release", l2.release())
    await r.step("lock key gone", c.get(r.k("lock")), get_res)


async def s_status_members(r: Run) -> None:
    c = r.c

    def status(s: Any) -> dict[str, Any]:
        return {"version": s.version, "dbSize": s.db_size, "raftIndex": s.raft_index,
                "raft_term": s.raft_term,
                "leader": None if s.leader is None else member(s.leader)}

    await r.step("status", c.status(), status)
    members = [member(m) async for m in c.members()]
    r.note("members", members)


def member(m: Any) -> dict[str, Any]:
    return {"ID": m.id, "name": m.name, "peer_urls": list(m.peer_urls),
            "client_urls": list(m.client_urls)}


async def s_errors(r: Run) -> None:
    c = r.c
    await r.step("get empty key", c.get(b""), get_res)
    await r.step("put empty key", c.put(b"", b"v"), put_res)
    await r.step("put 1.6 MiB", c.put(r.k("huge"), b"x" * int(1.6 * 1024 * 1024)), put_res)
    await r.step("put 2.1 MiB (gRPC receive limit)",
                 c.put(r.k("huge2"), b"x" * int(2.1 * 1024 * 1024)), put_res)
    await r.step("put 100 KiB", c.put(r.k("big"), b"y" * 100_000), put_res)
    await r.step("get 100 KiB", c.get(r.k("big")),
                 lambda g: {"len": len(g.value), "version": g.version})
    t = c.transactions
    await r.step("txn 129 ops", c.transaction(
        compare=[], success=[t.get(r.k(f"g{i}")) for i in range(129)], failure=[]), txn_res)


def raw_range(r: Any) -> dict[str, Any]:
    return {"header": hdr(r.header), "kvs": [kv(x) for x in r.kvs], "more": r.more,
            "count": r.count}


async def s_range_filters(r: Run) -> None:
    """RangeRequest fields aetcd's helpers don't expose, sent through aetcd's own stub
    and protos (these are what etcd's lock/election recipes send)."""
    c = r.c
    rpc = aetcd.rpc
    base = r.steps_base
    for name, v in [("a", b"1"), ("b", b"2"), ("c", b"3"), ("a", b"4"), ("d", b"5"),
                    ("e", b"6"), ("b", b"7")]:
        await c.put(r.k(name), v)  # creates: a+1 b+2 c+3 d+5 e+6; mods: a+4 b+7 c+3 ...
    end = r.p[:-1] + bytes([r.p[-1] + 1])
    desc, create, mod = rpc.RangeRequest.DESCEND, rpc.RangeRequest.CREATE, rpc.RangeRequest.MOD
    requests = {
        "max_create=base+3 limit1 desc create (lock waiter)": rpc.RangeRequest(
            key=r.p, range_end=end, limit=1, sort_order=desc, sort_target=create,
            max_create_revision=base + 3),
        "max_create=base+2 (two keys pass)": rpc.RangeRequest(
            key=r.p, range_end=end, max_create_revision=base + 2),
        "max_create=base (none pass)": rpc.RangeRequest(
            key=r.p, range_end=end, limit=1, sort_order=desc, sort_target=create,
            max_create_revision=base),
        "min_create=base+5": rpc.RangeRequest(key=r.p, range_end=end,
                                              min_create_revision=base + 5),
        "min_mod=base+4 max_mod=base+6": rpc.RangeRequest(
            key=r.p, range_end=end, min_mod_revision=base + 4, max_mod_revision=base + 6),
        "min_mod=base+7 limit 1 sort mod": rpc.RangeRequest(
            key=r.p, range_end=end, limit=1, sort_target=mod, min_mod_revision=base + 7),
        "count_only": rpc.RangeRequest(key=r.p, range_end=end, count_only=True),
        "count_only + limit": rpc.RangeRequest(key=r.p, range_end=end, count_only=True,
                                               limit=2),
        "keys_only limit 2": rpc.RangeRequest(key=r.p, range_end=end, keys_only=True, limit=2),
        "revision base+4 (history)": rpc.RangeRequest(key=r.p, range_end=end,
                                                      revision=base + 4),
        "revision -5 (latest)": rpc.RangeRequest(key=r.k("a"), revision=-5),
        "sort mod, order NONE (means ascend)": rpc.RangeRequest(key=r.p, range_end=end,
                                                                sort_target=mod),
        "limit -1 (no limit)": rpc.RangeRequest(key=r.p, range_end=end, limit=-1),
        "min_mod > max_mod (nothing)": rpc.RangeRequest(
            key=r.p, range_end=end, min_mod_revision=base + 6, max_mod_revision=base + 2),
    }
    for label, req in requests.items():
        await r.step(label, c.kvstub.Range(req, timeout=10), raw_range)


async def s_maintenance(r: Run) -> None:
    """Defragment, alarms, Hash, Snapshot. Digests are engine-specific: only their
    shape is compared (snapshot: size % 512 == 32 and the trailing sha256)."""
    c = r.c
    await c.put(r.k("k"), b"v")
    await r.step("defragment", c.defragment())
    await r.step("list_alarms", collect_alarms(c))
    await r.step("hash", c.hash(), lambda h: {"is uint32": 0 <= h < 2**32})
    buf = io.BytesIO()
    await r.step("snapshot", c.snapshot(buf))
    data = buf.getvalue()
    body, tail = data[:-32], data[-32:]
    r.note("snapshot shape", {"size % 512": len(data) % 512,
                              "trailing sha256 of the rest": hashlib.sha256(body).digest()
                              == tail})
    raw = await c.maintenancestub.Defragment(aetcd.rpc.DefragmentRequest(), timeout=10)
    r.note("defragment response has header", raw.HasField("header"))
    raw_alarm = await c.maintenancestub.Alarm(aetcd.rpc.AlarmRequest(), timeout=10)
    r.note("alarm response has header", raw_alarm.HasField("header"))
    hk = await c.maintenancestub.HashKV(aetcd.rpc.HashKVRequest(), timeout=10)
    r.note("hashkv", {"header": hdr(hk.header), "compact_revision": hk.compact_revision})


async def collect_alarms(c: aetcd.Client) -> list[Any]:
    return [{"type": a.alarm_type, "member_id": a.member_id} async for a in c.list_alarms()]


async def s_lease_grants(r: Run) -> None:
    c = r.c
    for label, ttl, lid in [("ttl 0", 0, None), ("ttl -5", -5, None), ("ttl 1", 1, None),
                            ("negative explicit id -7", 30, -7),
                            ("explicit id 1000", 30, 1000), ("explicit id 1000 again", 30, 1000),
                            ("ttl 9e9 (the maximum)", 9_000_000_000, None)]:
        lease = await r.step(f"grant {label}", c.lease(ttl, lease_id=lid),
                             lambda x, lid=lid: {"ID": x.id, "TTL": x.ttl,
                                                 "explicit id honoured": lid is None
                                                 or x.id == lid})
        if lease is not None:
            await r.step(f"ttl of {label}", c.get_lease_info(lease.id, keys=True), ttl_res)
            await r.step(f"revoke {label}", lease.revoke())
    await r.step("revoke 0", c.revoke_lease(0))
    await r.step("ttl of 0", c.get_lease_info(0), ttl_res)


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


def raw_txn_res(x: Any) -> dict[str, Any]:
    return {"header": hdr(x.header), "succeeded": x.succeeded,
            "responses": [raw_op(o) for o in x.responses]}


async def s_raw_txn(r: Run) -> None:
    """Txn requests built directly with aetcd's protos (ops its helpers can't express)."""
    c, rpc, base = r.c, aetcd.rpc, r.steps_base
    for i in range(4):
        await c.put(r.k(f"k{i}"), str(i).encode())  # base+1..base+4
    await c.put(r.k("k0"), b"again")  # base+5
    await c.compact(base + 2, physical=True)
    end = r.p[:-1] + bytes([r.p[-1] + 1])

    def rng(**kw: Any) -> Any:
        return rpc.RequestOp(request_range=rpc.RangeRequest(**kw))

    def txn(label: str, **kw: Any) -> Awaitable[Any]:
        return r.step(label, c.kvstub.Txn(rpc.TxnRequest(**kw), timeout=10), raw_txn_res)

    await txn("range in txn: limit 2, sort desc by mod, count",
              success=[rng(key=r.p, range_end=end, limit=2, sort_order=2, sort_target=2)])
    await txn("range in txn: count_only, keys_only",
              success=[rng(key=r.p, range_end=end, count_only=True),
                       rng(key=r.p, range_end=end, keys_only=True, limit=1)])
    await txn("range in txn at revision base+3 (history)",
              success=[rng(key=r.p, range_end=end, revision=base + 3)])
    await txn("range in txn at a future revision",
              success=[rng(key=r.k("k0"), revision=base + 100)])
    await txn("range in txn at a compacted revision",
              success=[rng(key=r.k("k0"), revision=base + 1)])
    await txn("future revision on the branch not taken (no error)",
              compare=[rpc.Compare(key=r.k("k0"), target=rpc.Compare.VERSION,
                                   result=rpc.Compare.EQUAL, version=99)],
              success=[rng(key=r.k("k0"), revision=base + 100)],
              failure=[rng(key=r.k("k1"))])
    await txn("empty RequestOp", success=[rpc.RequestOp()])
    await txn("empty compare key", compare=[rpc.Compare(
        key=b"", target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL, version=0)])
    await txn("compare VERSION target with the value field set (union mismatch)",
              compare=[rpc.Compare(key=r.k("k1"), target=rpc.Compare.VERSION,
                                   result=rpc.Compare.EQUAL, value=b"x")],
              success=[rng(key=r.k("k1"), keys_only=True)])
    await txn("compare VALUE target with no value set (empty bytes)",
              compare=[rpc.Compare(key=r.k("k1"), target=rpc.Compare.VALUE,
                                   result=rpc.Compare.GREATER)],
              success=[rng(key=r.k("k1"), keys_only=True)])
    await txn("compare LEASE == 0",
              compare=[rpc.Compare(key=r.k("k1"), target=rpc.Compare.LEASE,
                                   result=rpc.Compare.EQUAL, lease=0)],
              success=[rng(key=r.k("k1"))])
    await txn("put prev_kv + delete prev_kv in txn",
              success=[rpc.RequestOp(request_put=rpc.PutRequest(key=r.k("k1"), value=b"n",
                                                                prev_kv=True)),
                       rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
                           key=r.k("k2"), prev_kv=True))])
    await txn("put ignore_value on a missing key in txn",
              success=[rpc.RequestOp(request_put=rpc.PutRequest(key=r.k("nope"),
                                                                ignore_value=True))])
    await txn("put with missing lease in txn",
              success=[rpc.RequestOp(request_put=rpc.PutRequest(key=r.k("l"), value=b"v",
                                                                lease=123456789))])
    await r.step("get_prefix after", c.get_prefix(r.p), get_range)


async def s_read_your_writes(r: Run) -> None:
    """300 x (put, then serializable get and linearizable get on a second connection):
    a read never misses an acknowledged write; revisions advance by exactly one."""
    c = r.c
    host, port = r.endpoint.rsplit(":", 1)
    stale_s = stale_l = bad_rev = 0
    async with aetcd.Client(host=host, port=int(port), timeout=10) as other:
        last = r.steps_base
        for i in range(300):
            p = await c.put(r.k("k"), str(i).encode())
            bad_rev += p.header.revision != last + 1
            last = p.header.revision
            g = await c.get(r.k("k"), serializable=True)
            stale_s += g is None or g.value != str(i).encode()
            g2 = await other.get(r.k("k"))
            stale_l += g2 is None or g2.value != str(i).encode()
    r.note("stale serializable reads", stale_s)
    r.note("stale linearizable reads (second connection)", stale_l)
    r.note("puts not at previous revision + 1", bad_rev)


async def s_concurrency(r: Run) -> None:
    """50 concurrent claims (create == 0) of one key, 50 concurrent puts of distinct keys
    and of one key: exactly one claim wins; revisions are distinct and contiguous."""
    c, t, base = r.c, r.c.transactions, r.steps_base
    claims = await asyncio.gather(*[
        c.transaction(compare=[t.create(r.k("claim")) == 0],
                      success=[t.put(r.k("claim"), str(i).encode())], failure=[])
        for i in range(50)])
    r.note("claims won", sum(1 for ok, _ in claims if ok))
    puts = await asyncio.gather(*[c.put(r.k(f"d{i:02d}"), b"v") for i in range(50)])
    revs = sorted(p.header.revision - base for p in puts)
    r.note("distinct-key put revisions (offsets)",
           {"first": revs[0], "last": revs[-1], "distinct": len(set(revs))})
    same = await asyncio.gather(*[c.put(r.k("same"), str(i).encode()) for i in range(50)])
    g = await c.get(r.k("same"))
    r.note("same-key puts", {"version": g.version if g else None,
                             "value is the last write": g is not None and g.mod_revision
                             == max(p.header.revision for p in same)})


SCENARIOS: dict[str, Callable[[Run], Awaitable[None]]] = {
    "put_get": s_put_get,
    "read_your_writes": s_read_your_writes,
    "concurrency": s_concurrency,
    "prefix_range": s_prefix_range,
    "range_filters": s_range_filters,
    "delete": s_delete,
    "txn": s_txn,
    "raw_txn": s_raw_txn,
    "lease": s_lease,
    "keepalive": s_keepalive,
    "watch": s_watch,
    "watch_future": s_watch_future,
    "watch_compacted": s_watch_compacted,
    "raw_watch": s_raw_watch,
    "watch_catchup_batches": s_watch_catchup_batches,
    "watch_fragment": s_watch_fragment,
    "lock": s_lock,
    "status_members": s_status_members,
    "maintenance": s_maintenance,
    "lease_grants": s_lease_grants,
    "errors": s_errors,
}


async def main_async(endpoint: str, prefix: str, names: list[str]) -> dict[str, Any]:
    host, port = endpoint.rsplit(":", 1)
    out: dict[str, Any] = {}
    async with aetcd.Client(host=host, port=int(port), timeout=10) as client:
        for name in names:
            run = Run(client, f"{prefix}/{name}/")
            base = await run.base()
            run.steps_base = base
            run.endpoint = endpoint
            try:
                await asyncio.wait_for(SCENARIOS[name](run), 40)
            except Exception as e:  # noqa: BLE001 - report, the test compares it
                run.note("scenario aborted", {"exception": type(e).__name__, "detail": str(e)})
            out[name] = {"base": base, "steps": run.steps}
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint")
    ap.add_argument("--prefix", default="aetcd")
    ap.add_argument("--list", action="store_true", help="print the scenario names")
    ap.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    a = ap.parse_args()
    if a.list:
        sys.stdout.write("\n".join(SCENARIOS) + "\n")
        return 0
    if not a.endpoint:
        ap.error("--endpoint is required")
    names = a.scenarios or list(SCENARIOS)
    result = asyncio.run(main_async(a.endpoint, a.prefix, names))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
