"""The key-value, transaction, lease, lock, cluster and maintenance scenarios of
``aetcd_driver.py`` (run in its subprocess: they import aetcd).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Awaitable
from typing import Any

import aetcd

from tests.compat.aetcd_steps import (
    Run,
    del_res,
    get_range,
    get_res,
    hdr,
    kv,
    put_res,
    raw_op,
    txn_res,
)

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
