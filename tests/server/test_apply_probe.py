"""A replay of the appendix A probe against the applier (etcd 3.4 rules)."""

from __future__ import annotations

import pytest

from coord.errors import (
    Compacted,
    DuplicateKey,
    EmptyKey,
    FutureRevision,
    KeyNotFound,
    LeaseExists,
    LeaseNotFound,
    LeaseProvided,
    LeaseTTLTooLarge,
    RequestTooLarge,
    TooManyOps,
    ValueProvided,
)
from coord.pb import internal_pb2, rpc_pb2
from coord.server import validate
from tests.server.reqs import RR, Client, cmp, delete, kvs, put, rng, txn, txn_op


def _probe_keys(c: Client) -> int:
    """Two unrelated keys, then the probe/ prefix exactly as in appendix A; returns S."""
    c.put(b"other/1", b"o1")
    c.put(b"other/2", b"o2")
    return c.rev


# ---------------------------------------------------------------------- appendix A replay
def test_appendix_a_kv_probe(c: Client) -> None:
    s = _probe_keys(c)
    assert c.put(b"probe/a", b"1").header.revision == s + 1
    r = c.put(b"probe/a", b"1", prev_kv=True)
    assert r.header.revision == s + 2
    assert (r.prev_kv.create_revision, r.prev_kv.mod_revision, r.prev_kv.version) == (
        s + 1,
        s + 1,
        1,
    )
    assert r.prev_kv.value == b"1"
    g = c.get(b"probe/a")
    assert g.header.revision == s + 2
    assert kvs(g) == [(b"probe/a", s + 1, s + 2, 2, b"1")]
    assert g.count == 1
    d = c.delete(b"probe/a", prev_kv=True)
    assert d.header.revision == s + 3 and d.deleted == 1
    assert d.prev_kvs[0].mod_revision == s + 2 and d.prev_kvs[0].version == 2
    d = c.delete(b"probe/a", prev_kv=True)
    assert d.header.revision == s + 3 and d.deleted == 0 and not d.prev_kvs
    assert c.put(b"probe/a", b"2").header.revision == s + 4
    assert kvs(c.get(b"probe/a")) == [(b"probe/a", s + 4, s + 4, 1, b"2")]
    with pytest.raises(EmptyKey, match=r"^etcdserver: key is not provided$"):
        validate.check_range(rpc_pb2.RangeRequest())
    with pytest.raises(EmptyKey):
        validate.check_put(rpc_pb2.PutRequest(value=b"x"))
    with pytest.raises(KeyNotFound, match=r"^etcdserver: key not found$"):
        c.put(b"probe/missing", ignore_value=True)
    with pytest.raises(ValueProvided, match=r"^etcdserver: value is provided$"):
        validate.check_put(rpc_pb2.PutRequest(key=b"probe/a", value=b"v", ignore_value=True))
    with pytest.raises(LeaseProvided, match=r"^etcdserver: lease is provided$"):
        validate.check_put(rpc_pb2.PutRequest(key=b"probe/a", lease=5, ignore_lease=True))
    r = c.put(b"probe/a", ignore_value=True, prev_kv=True)
    assert r.header.revision == s + 5
    assert (r.prev_kv.create_revision, r.prev_kv.mod_revision, r.prev_kv.value) == (
        s + 4,
        s + 4,
        b"2",
    )
    with pytest.raises(LeaseNotFound, match=r"^etcdserver: requested lease not found$"):
        c.put(b"probe/a", b"x", lease=12345)
    with pytest.raises(EmptyKey):
        validate.check_delete_range(rpc_pb2.DeleteRangeRequest())
    assert c.rev == s + 5
    c.put(b"probe/b", b"vb")
    c.put(b"probe/c", b"vc")
    c.put(b"probe/d", b"vd")
    c.put(b"probe/e", b"ve")
    c.put(b"probe/c", b"zz")
    cur = c.rev
    assert cur == s + 10

    r = c.get(b"probe/", b"probe0", limit=2, keys_only=True)
    assert kvs(r) == [(b"probe/a", s + 4, s + 5, 2, b""), (b"probe/b", s + 6, s + 6, 1, b"")]
    assert r.more and r.count == 5 and r.header.revision == cur
    r = c.get(b"probe/", b"probe0", count_only=True)
    assert r.count == 5 and not r.kvs and not r.more
    assert c.get(b"probe/c", b"\0", count_only=True).count == 3
    assert c.get(b"\0", b"\0", count_only=True).count == 7
    r = c.get(b"probe/c", b"probe/a")
    assert r.count == 0 and not r.kvs and r.header.revision == cur
    r = c.get(
        b"probe/", b"probe0", limit=2, keys_only=True, sort_target=RR.VALUE, sort_order=RR.DESCEND
    )
    assert [kv.key for kv in r.kvs] == [b"probe/c", b"probe/e"] and r.more and r.count == 5
    r = c.get(b"probe/", b"probe0", keys_only=True, sort_target=RR.MOD)
    assert [kv.key for kv in r.kvs] == [b"probe/a", b"probe/b", b"probe/d", b"probe/e", b"probe/c"]
    r = c.get(b"probe/", b"probe0", keys_only=True, min_mod_revision=cur)
    assert [kv.key for kv in r.kvs] == [b"probe/c"] and r.count == 5 and not r.more
    r = c.get(b"probe/", b"probe0", keys_only=True, max_create_revision=cur - 3, limit=1)
    assert [kv.key for kv in r.kvs] == [b"probe/a"] and r.more and r.count == 5
    r = c.get(b"probe/b", serializable=True)
    assert kvs(r) == [(b"probe/b", s + 6, s + 6, 1, b"vb")]
    with pytest.raises(FutureRevision, match=r"^etcdserver: mvcc: required revision is a future"):
        c.get(b"probe/b", revision=cur + 1)
    assert kvs(c.get(b"probe/b", revision=-5)) == kvs(r)

    # txn compares
    t = c.txn(txn([cmp(b"probe/zz", "VALUE", "EQUAL", b"")], [], [rng(b"probe/c")]))
    assert not t.succeeded and t.header.revision == cur
    assert t.responses[0].response_range.header.revision == cur
    assert t.responses[0].response_range.kvs[0].value == b"zz"
    assert c.txn(txn([cmp(b"probe/zz", "VERSION", "EQUAL", 0)])).succeeded
    assert c.txn(txn([cmp(b"probe/", "CREATE", "GREATER", 0, end=b"probe0")])).succeeded
    assert c.txn(txn([cmp(b"probe/a", "LEASE", "EQUAL", 0)])).succeeded
    assert not c.txn(txn([cmp(b"probe/", "MOD", "LESS", 1, end=b"probe0")])).succeeded
    assert c.rev == cur
    t = c.txn(txn([], [put(b"probe/t1", b"x"), put(b"probe/t2", b"x"), rng(b"probe/t1")]))
    assert t.header.revision == cur + 1 and t.succeeded
    assert [r.WhichOneof("response") for r in t.responses] == [
        "response_put",
        "response_put",
        "response_range",
    ]
    assert all(
        getattr(r, r.WhichOneof("response")).header.revision == cur + 1 for r in t.responses
    )
    assert t.responses[2].response_range.kvs[0].mod_revision == cur + 1
    t = c.txn(txn([], [rng(b"probe/t1")]))
    assert t.header.revision == cur + 1
    t = c.txn(txn([], [delete(b"probe/nothing")]))
    assert t.header.revision == cur + 1 and t.responses[0].response_delete_range.deleted == 0
    assert t.responses[0].response_delete_range.header.revision == cur + 1
    for bad in (
        txn([], [put(b"k"), put(b"k")]),
        txn([], [put(b"k"), delete(b"k")]),
        txn([], [put(b"k"), delete(b"a", b"z")]),
        txn([], [put(b"k"), txn_op([], [put(b"k")])]),
    ):
        with pytest.raises(DuplicateKey, match=r"^etcdserver: duplicate key given in txn request$"):
            validate.check_txn(bad)
    t = c.txn(txn([], [delete(b"probe/x"), delete(b"probe/x")]))
    assert t.header.revision == cur + 1 and len(t.responses) == 2
    ok = txn([cmp(b"probe/a", "VERSION", "EQUAL", 2)], [put(b"probe/t3")], [put(b"probe/t3")])
    validate.check_txn(ok)
    assert c.txn(ok).header.revision == cur + 2
    nested = txn([], [put(b"probe/n1"), txn_op([], [put(b"probe/n2")])])
    validate.check_txn(nested)
    t = c.txn(nested)
    assert t.header.revision == cur + 3
    inner = t.responses[1].response_txn
    assert inner.HasField("header") and inner.header.revision == 0 and inner.succeeded
    assert inner.responses[0].response_put.header.revision == cur + 3
    with pytest.raises(TooManyOps, match=r"^etcdserver: too many operations in txn request$"):
        validate.check_txn(txn([], [rng(b"k")] * 129))
    validate.check_txn(txn([], [rng(b"k")] * 128))
    assert c.txn(txn([], [rng(b"k")] * 128)).header.revision == cur + 3
    with pytest.raises(KeyNotFound):
        validate.check_txn(txn([], [rpc_pb2.RequestOp()]))
    with pytest.raises(EmptyKey):
        validate.check_txn(txn([cmp(b"", "VERSION", "EQUAL", 0)]))
    with pytest.raises(LeaseNotFound):
        c.txn(txn([], [put(b"probe/l", b"v", lease=999)]))
    with pytest.raises(FutureRevision):
        c.txn(txn([], [rng(b"probe/a", revision=cur + 10)]))
    assert c.rev == cur + 3

    # request size
    big = internal_pb2.InternalRequest(
        id=1, put=rpc_pb2.PutRequest(key=b"probe/big", value=b"x" * int(1.4 * 1024 * 1024))
    )
    validate.check_request_size(big)
    assert c.put(b"probe/big", big.put.value).header.revision == cur + 4
    too_big = internal_pb2.InternalRequest(
        id=1, put=rpc_pb2.PutRequest(key=b"probe/big", value=b"x" * int(1.6 * 1024 * 1024))
    )
    with pytest.raises(RequestTooLarge, match=r"^etcdserver: request is too large$"):
        validate.check_request_size(too_big)

    # leases
    rev = c.rev
    ids = []
    for ttl in (1, 0, -5):
        g = c.grant(ttl)
        assert g.TTL == 2 and g.ID > 0 and g.header.revision == rev
        ids.append(g.ID)
    assert c.grant(30, 1000).ID == 1000
    with pytest.raises(LeaseExists, match=r"^etcdserver: lease already exists$"):
        c.grant(30, 1000)
    with pytest.raises(LeaseTTLTooLarge, match=r"^etcdserver: too large lease TTL$"):
        c.grant(9_000_000_001, 1001)
    assert c.grant(30, -7).ID == -7
    t = c.txn(txn([], [put(b"probe/l1", b"v", lease=1000), put(b"probe/l2", b"v", lease=1000)]))
    assert t.header.revision == rev + 1
    ttl, granted, keys = c.a.lessor.time_to_live(1000, c.now + 0.5)
    assert (ttl, granted, keys) == (30, 30, [b"probe/l1", b"probe/l2"])
    assert c.a.lessor.leases() == [*ids, 1000, -7]
    assert c.revoke(1000).header.revision == rev + 2
    assert c.get(b"probe/l", b"probe/m").count == 0
    with pytest.raises(LeaseNotFound):
        c.revoke(1000)
    assert c.a.lessor.time_to_live(1000, c.now)[0] == -1
    with pytest.raises(LeaseNotFound):
        c.revoke(0)
    c.a.lessor.promote(c.now)
    lid = c.grant(2).ID
    c.put(b"probe/exp", b"v", lease=lid)
    assert c.a.lessor.expired(c.now + 2.5) == sorted([*ids, lid])  # same deadline: by id
    c.expire(lid)
    assert c.rev == rev + 4
    assert c.a.lessor.time_to_live(lid, c.now + 2.5)[0] == -1

    # compaction
    cur = c.rev
    comp = cur - 2
    assert c.compact(comp).header.revision == cur
    assert kvs(c.get(b"probe/c", revision=comp)) == [(b"probe/c", s + 7, s + 10, 2, b"zz")]
    with pytest.raises(Compacted, match=r"^etcdserver: mvcc: required revision has been compacted"):
        c.get(b"probe/c", revision=comp - 1)
    with pytest.raises(Compacted):
        c.compact(comp)
    with pytest.raises(FutureRevision):
        c.compact(cur + 1)
    with pytest.raises(Compacted):
        c.compact(0)
    h, crev = c.a.hash_kv(0)
    assert crev == comp and 0 <= h < 2**32
