"""The applier against etcd 3.4 rules, and a replay of the appendix A probe."""

from __future__ import annotations

import pytest

from coord.api.errors import status_code
from coord.api.watch import open_stream
from coord.errors import (
    Compacted,
    CoordError,
    DuplicateKey,
    EmptyKey,
    FutureRevision,
    KeyNotFound,
    LeaseExists,
    LeaseNotFound,
    LeaseProvided,
    LeaseTTLTooLarge,
    NotLeader,
    RequestTooLarge,
    TooManyOps,
    ValueProvided,
)
from coord.pb import internal_pb2, rpc_pb2
from coord.server import validate
from coord.server.apply import Applier, lease_id_for
from tests.server.reqs import RR, Client, cmp, delete, kvs, put, rng, txn, txn_op


@pytest.fixture
def c() -> Client:
    return Client()


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


# ---------------------------------------------------------------------- revisions
def test_new_store_is_at_revision_one() -> None:
    a = Applier()
    assert a.current_revision == 1 and a.compact_revision == -1
    r = a.range(rpc_pb2.RangeRequest(key=b"a"))
    assert r.header.revision == 1 and r.count == 0


def test_same_value_put_bumps_revision_and_version(c: Client) -> None:
    c.put(b"k", b"v")
    c.put(b"k", b"v")
    assert kvs(c.get(b"k")) == [(b"k", 2, 3, 2, b"v")]


def test_recreate_resets_version_and_create_revision(c: Client) -> None:
    c.put(b"k", b"1")
    c.put(b"k", b"2")
    c.delete(b"k")
    c.put(b"k", b"3")
    assert kvs(c.get(b"k")) == [(b"k", 5, 5, 1, b"3")]
    assert kvs(c.get(b"k", revision=3)) == [(b"k", 2, 3, 2, b"2")]
    assert c.get(b"k", revision=4).count == 0


def test_delete_range_prefix_one_revision(c: Client) -> None:
    for k in (b"p/a", b"p/b", b"p/c", b"q"):
        c.put(k, k)
    d = c.delete(b"p/", b"p0", prev_kv=True)
    assert d.deleted == 3 and d.header.revision == 6
    assert [kv.key for kv in d.prev_kvs] == [b"p/a", b"p/b", b"p/c"]
    assert c.get(b"\0", b"\0", count_only=True).count == 1


def test_delete_all_from_key(c: Client) -> None:
    c.put(b"a", b"1")
    c.put(b"b", b"1")
    assert c.delete(b"\0", b"\0").deleted == 2


# ---------------------------------------------------------------------- range rules
def test_range_from_key_and_empty_range(c: Client) -> None:
    for k in (b"a", b"b", b"c"):
        c.put(k, b"v")
    assert [kv.key for kv in c.get(b"b", b"\0").kvs] == [b"b", b"c"]
    assert c.get(b"c", b"b").count == 0
    assert c.get(b"b", b"b").count == 0
    assert [kv.key for kv in c.get(b"a", b"c").kvs] == [b"a", b"b"]


def test_range_sort_orders(c: Client) -> None:
    c.put(b"a", b"3")
    c.put(b"b", b"1")
    c.put(b"c", b"2")
    c.put(b"b", b"4")

    def keys(**kw: object) -> list[bytes]:
        return [kv.key for kv in c.get(b"a", b"z", **kw).kvs]

    assert keys() == [b"a", b"b", b"c"]
    assert keys(sort_order=RR.DESCEND) == [b"c", b"b", b"a"]
    assert keys(sort_order=RR.ASCEND) == [b"a", b"b", b"c"]
    assert keys(sort_target=RR.VALUE) == [b"c", b"a", b"b"]
    assert keys(sort_target=RR.VALUE, sort_order=RR.DESCEND) == [b"b", b"a", b"c"]
    assert keys(sort_target=RR.VERSION, sort_order=RR.DESCEND) == [b"b", b"a", b"c"]
    assert keys(sort_target=RR.CREATE, sort_order=RR.DESCEND) == [b"c", b"b", b"a"]
    assert keys(sort_target=RR.MOD, sort_order=RR.DESCEND) == [b"b", b"c", b"a"]
    assert keys(sort_target=RR.MOD, sort_order=RR.DESCEND, limit=1) == [b"b"]


def test_sort_target_with_order_none_sorts_only_the_fetched_page(c: Client) -> None:
    """etcd fetches limit+1 in key order when sort_order is NONE, then sorts ASCEND."""
    c.put(b"c", b"1")
    c.put(b"b", b"1")
    c.put(b"a", b"1")
    c.put(b"d", b"1")
    r = c.get(b"a", b"z", sort_target=RR.MOD, limit=2)
    # fetched a(4), b(3), c(2) -> by mod: c, b, a -> first two
    assert [kv.key for kv in r.kvs] == [b"c", b"b"] and r.more and r.count == 4


def test_range_filters_and_limit(c: Client) -> None:
    for i in range(5):
        c.put(b"k%d" % i, b"v")
    c.put(b"k0", b"w")
    r = c.get(b"k", b"l", min_create_revision=3, max_create_revision=5)
    assert [kv.key for kv in r.kvs] == [b"k1", b"k2", b"k3"] and r.count == 5
    r = c.get(b"k", b"l", max_mod_revision=4, limit=1)
    assert [kv.key for kv in r.kvs] == [b"k1"] and r.more and r.count == 5
    r = c.get(b"k", b"l", min_mod_revision=7)
    assert [kv.key for kv in r.kvs] == [b"k0"]
    r = c.get(b"k", b"l", limit=5)
    assert len(r.kvs) == 5 and not r.more
    r = c.get(b"k", b"l", limit=-1)
    assert len(r.kvs) == 5 and not r.more


def test_range_revision_rules(c: Client) -> None:
    c.put(b"k", b"1")
    c.put(b"k", b"2")
    c.put(b"k", b"3")
    assert c.get(b"k", revision=2).kvs[0].value == b"1"
    assert c.get(b"k", revision=1).count == 0
    assert c.get(b"k", revision=2).header.revision == 4
    c.compact(3)
    assert c.get(b"k", revision=3).kvs[0].value == b"2"
    with pytest.raises(Compacted):
        c.get(b"k", revision=2)
    with pytest.raises(FutureRevision):
        c.get(b"k", revision=5)


def test_keys_only_and_count_only(c: Client) -> None:
    c.put(b"a", b"v", )
    r = c.get(b"a", keys_only=True)
    assert r.kvs[0].value == b"" and r.kvs[0].version == 1
    r = c.get(b"a", count_only=True, limit=1)
    assert r.count == 1 and not r.kvs and not r.more


# ---------------------------------------------------------------------- put / lease
def test_put_lease_attach_detach(c: Client) -> None:
    c.grant(10, 1)
    c.grant(10, 2)
    c.put(b"k", b"v", lease=1)
    assert c.a.lessor.keys(1) == [b"k"]
    c.put(b"k", b"v", lease=2)
    assert c.a.lessor.keys(1) == [] and c.a.lessor.keys(2) == [b"k"]
    c.put(b"k", b"v2", ignore_lease=True)
    assert c.get(b"k").kvs[0].lease == 2
    c.put(b"k", b"v3")
    assert c.a.lessor.keys(2) == []
    c.put(b"k", b"v4", lease=1)
    c.delete(b"k")
    assert c.a.lessor.keys(1) == []
    assert c.revoke(1).header.revision == c.rev  # no keys: no bump


def test_ignore_value_keeps_value(c: Client) -> None:
    c.grant(10, 1)
    c.put(b"k", b"v")
    c.put(b"k", ignore_value=True, lease=1)
    kv = c.get(b"k").kvs[0]
    assert kv.value == b"v" and kv.lease == 1 and kv.version == 2
    with pytest.raises(KeyNotFound):
        c.put(b"nope", ignore_lease=True)


def test_revoke_deletes_keys_in_one_sorted_revision(c: Client) -> None:
    c.grant(10, 7)
    for k in (b"z", b"a", b"m"):
        c.put(k, b"v", lease=7)
    hub = c.a.watch_hub
    s = open_stream(hub)
    s.create(rpc_pb2.WatchCreateRequest(key=b"\0", range_end=b"\0"))
    s.pending()
    rev = c.rev
    assert c.revoke(7).header.revision == rev + 1
    (resp,) = s.pending()
    assert [(e.type, e.kv.key) for e in resp.events] == [(1, b"a"), (1, b"m"), (1, b"z")]


def test_lease_expire_skips_unknown_and_revokes_each(c: Client) -> None:
    c.grant(10, 1)
    c.grant(10, 2)
    c.put(b"a", b"v", lease=1)
    c.put(b"b", b"v", lease=2)
    rev = c.rev
    c.expire(1, 99, 2)
    assert c.rev == rev + 2
    assert c.a.lessor.leases() == []
    c.expire(3)
    assert c.rev == rev + 2


def test_grant_id_zero_picked_from_request_id() -> None:
    a = Applier()
    req = internal_pb2.InternalRequest(id=42, lease_grant=rpc_pb2.LeaseGrantRequest(TTL=5))
    r = a.apply(req, 0.0)
    assert isinstance(r, rpc_pb2.LeaseGrantResponse)
    assert lease_id_for(42) == r.ID and r.ID > 0
    b = Applier()
    b.lessor.grant(lease_id_for(42), 5, 0.0)
    r2 = b.apply(req, 0.0)
    assert isinstance(r2, rpc_pb2.LeaseGrantResponse) and r2.ID not in (0, lease_id_for(42))


# ---------------------------------------------------------------------- txn
def test_txn_compare_targets_and_results(c: Client) -> None:
    c.grant(10, 5)
    c.put(b"k", b"m", lease=5)  # rev 2
    cases = [
        (cmp(b"k", "VALUE", "EQUAL", b"m"), True),
        (cmp(b"k", "VALUE", "GREATER", b"a"), True),
        (cmp(b"k", "VALUE", "LESS", b"a"), False),
        (cmp(b"k", "VALUE", "NOT_EQUAL", b"m"), False),
        (cmp(b"k", "VERSION", "EQUAL", 1), True),
        (cmp(b"k", "CREATE", "EQUAL", 2), True),
        (cmp(b"k", "MOD", "GREATER", 1), True),
        (cmp(b"k", "MOD", "LESS", 2), False),
        (cmp(b"k", "LEASE", "EQUAL", 5), True),
        (cmp(b"k", "LEASE", "NOT_EQUAL", 5), False),
        (cmp(b"x", "VALUE", "NOT_EQUAL", b"m"), False),
        (cmp(b"x", "VALUE", "EQUAL", b""), False),
        (cmp(b"x", "CREATE", "EQUAL", 0), True),
        (cmp(b"x", "LEASE", "EQUAL", 0), True),
        (cmp(b"x", "MOD", "GREATER", 0), False),
        (cmp(b"a", "VERSION", "EQUAL", 1, end=b"z"), True),
        (cmp(b"y", "VERSION", "EQUAL", 0, end=b"z"), True),
        (cmp(b"y", "VALUE", "EQUAL", b"", end=b"z"), False),
    ]
    for compare, want in cases:
        assert c.txn(txn([compare])).succeeded is want, compare
    # a target whose union field does not match compares against 0
    odd = rpc_pb2.Compare(key=b"k", target=rpc_pb2.Compare.VERSION, create_revision=1)
    assert c.txn(txn([odd])).succeeded is False
    assert c.rev == 2


def test_txn_ops_see_earlier_writes_and_share_one_revision(c: Client) -> None:
    c.put(b"a", b"0")
    t = c.txn(txn([], [rng(b"a"), put(b"a", b"1"), rng(b"a"), delete(b"a"), rng(b"a")]))
    assert t.header.revision == 3
    r = t.responses
    assert r[0].response_range.header.revision == 2
    assert r[0].response_range.kvs[0].value == b"0"
    assert r[1].response_put.header.revision == 3
    assert r[2].response_range.kvs[0].value == b"1" and r[2].response_range.header.revision == 3
    assert r[3].response_delete_range.deleted == 1
    assert r[4].response_range.count == 0
    assert c.get(b"a").count == 0
    events = c.a.store.log_entry(3)
    assert events is not None and len(events) == 4


def test_nested_txn_compares_use_start_state(c: Client) -> None:
    c.put(b"flag", b"0")
    t = c.txn(
        txn(
            [],
            [
                put(b"flag", b"1"),
                txn_op([cmp(b"flag", "VALUE", "EQUAL", b"0")], [put(b"seen", b"start")],
                       [put(b"seen", b"new")]),
            ],
        )
    )
    assert t.responses[1].response_txn.succeeded
    assert c.get(b"seen").kvs[0].value == b"start"


def test_nested_txn_path_order(c: Client) -> None:
    c.put(b"a", b"1")
    inner_true = txn_op([cmp(b"a", "VALUE", "EQUAL", b"1")], [put(b"t1")], [put(b"f1")])
    inner_false = txn_op([cmp(b"a", "VALUE", "EQUAL", b"2")], [put(b"t2")], [put(b"f2")])
    t = c.txn(txn([cmp(b"a", "VERSION", "EQUAL", 5)], [put(b"never")], [inner_true, inner_false]))
    assert not t.succeeded
    assert [r.response_txn.succeeded for r in t.responses] == [True, False]
    have = {kv.key for kv in c.get(b"\0", b"\0").kvs}
    assert have == {b"a", b"t1", b"f2"}


def test_txn_failed_path_changes_nothing(c: Client) -> None:
    c.put(b"a", b"1")
    snap = c.a.snapshot()
    with pytest.raises(LeaseNotFound):
        c.txn(txn([], [put(b"b", b"1"), put(b"c", b"1", lease=77)]))
    with pytest.raises(KeyNotFound):
        c.txn(txn([], [put(b"b", b"1"), put(b"zz", ignore_value=True)]))
    with pytest.raises(Compacted):
        c.put(b"a", b"2")
        c.compact(3)
        c.txn(txn([], [put(b"b", b"1"), rng(b"a", revision=2)]))
    assert c.get(b"b").count == 0
    del snap


def test_txn_range_negative_revision_is_compacted_like_etcd(c: Client) -> None:
    c.put(b"a", b"1")
    with pytest.raises(Compacted):
        c.txn(txn([], [rng(b"a", revision=-5)]))
    assert c.get(b"a", revision=-5).count == 1


def test_txn_range_at_own_revision_is_future(c: Client) -> None:
    with pytest.raises(FutureRevision):
        c.txn(txn([], [put(b"a", b"1"), rng(b"a", revision=2)]))
    assert c.rev == 1


def test_failed_put_rolls_back(c: Client) -> None:
    """A put that fails in the middle of a txn (unvalidated request) leaves no trace."""
    c.grant(10, 1)
    c.put(b"a", b"1", lease=1)
    before = c.a.snapshot()
    bad = txn([], [put(b"a", b"2"), delete(b"a"), put(b"a", ignore_value=True)])
    with pytest.raises(KeyNotFound):
        c.txn(bad)
    assert c.a.snapshot() == before
    assert c.a.lessor.keys(1) == [b"a"]


def test_errors_are_coord_errors() -> None:
    for cls in (Compacted, FutureRevision, KeyNotFound, LeaseNotFound, DuplicateKey):
        assert issubclass(cls, CoordError)


# ---------------------------------------------------------------------- snapshot / hash
def test_snapshot_restore_roundtrip(c: Client) -> None:
    c.grant(30, 9)
    c.put(b"a", b"1", lease=9)
    c.put(b"b", b"1")
    c.put(b"a", b"2", lease=9)
    c.delete(b"b")
    c.compact(3)
    c.put(b"c", b"3")
    snap = c.a.snapshot()
    b = Applier()
    b.restore(snap)
    assert b.snapshot() == snap
    assert b.current_revision == c.rev and b.compact_revision == 3
    assert b.hash_kv(0) == c.a.hash_kv(0)
    assert b.lessor.keys(9) == [b"a"]
    assert b.range(rpc_pb2.RangeRequest(key=b"a", revision=3)) == c.get(b"a", revision=3)
    with pytest.raises(ValueError, match="snapshot"):
        b.restore(b"garbage")


def test_same_log_same_bytes() -> None:
    def run() -> bytes:
        c = Client()
        c.grant(10, 3)
        for i in range(50):
            c.put(b"k%d" % (i % 7), b"v%d" % i, lease=3 if i % 5 == 0 else 0)
            if i % 11 == 0:
                c.delete(b"k1", b"k4")
        c.compact(20)
        return c.a.snapshot()

    assert run() == run()


def test_hash_kv_rules(c: Client) -> None:
    c.put(b"a", b"1")
    c.put(b"a", b"2")
    h2 = c.a.hash_kv(2)
    c.put(b"b", b"3")
    assert c.a.hash_kv(2) == h2
    assert c.a.hash_kv(0) != h2
    with pytest.raises(FutureRevision):
        c.a.hash_kv(10)
    c.compact(3)
    with pytest.raises(Compacted):
        c.a.hash_kv(3)


def test_apply_range_and_empty_request() -> None:
    a = Applier()
    assert a.apply(internal_pb2.InternalRequest(id=1), 0.0) is None
    r = a.apply(internal_pb2.InternalRequest(range=rpc_pb2.RangeRequest(key=b"x")), 0.0)
    assert isinstance(r, rpc_pb2.RangeResponse) and r.header.revision == 1


def test_lease_read_helpers(c: Client) -> None:
    a = c.a
    a.lessor.promote(0.0)
    c.grant(30, 1000)
    c.grant(10, -7)
    c.put(b"l2", b"v", lease=1000)
    c.put(b"l1", b"v", lease=1000)
    r = a.lease_time_to_live(rpc_pb2.LeaseTimeToLiveRequest(ID=1000, keys=True), 0.5)
    assert (r.ID, r.TTL, r.grantedTTL, list(r.keys)) == (1000, 29, 30, [b"l1", b"l2"])
    assert r.header.revision == c.rev
    r = a.lease_time_to_live(rpc_pb2.LeaseTimeToLiveRequest(ID=1000), 0.5)
    assert not r.keys
    r = a.lease_time_to_live(rpc_pb2.LeaseTimeToLiveRequest(ID=5), 0.5)
    assert (r.ID, r.TTL, r.grantedTTL) == (5, -1, 0)
    assert [x.ID for x in a.lease_leases().leases] == [1000, -7]
    k = a.lease_keepalive(rpc_pb2.LeaseKeepAliveRequest(ID=-7), 5.0)
    assert (k.ID, k.TTL, k.header.revision) == (-7, 10, c.rev)
    assert a.lessor.time_to_live(-7, 14.0)[0] == 1
    k = a.lease_keepalive(rpc_pb2.LeaseKeepAliveRequest(ID=99), 5.0)
    assert (k.ID, k.TTL) == (99, 0)
    a.lessor.demote()
    with pytest.raises(NotLeader):
        a.lease_keepalive(rpc_pb2.LeaseKeepAliveRequest(ID=-7), 5.0)


@pytest.mark.parametrize(
    ("cls", "code", "message"),
    [
        (EmptyKey, "INVALID_ARGUMENT", "etcdserver: key is not provided"),
        (KeyNotFound, "INVALID_ARGUMENT", "etcdserver: key not found"),
        (ValueProvided, "INVALID_ARGUMENT", "etcdserver: value is provided"),
        (LeaseProvided, "INVALID_ARGUMENT", "etcdserver: lease is provided"),
        (TooManyOps, "INVALID_ARGUMENT", "etcdserver: too many operations in txn request"),
        (DuplicateKey, "INVALID_ARGUMENT", "etcdserver: duplicate key given in txn request"),
        (RequestTooLarge, "INVALID_ARGUMENT", "etcdserver: request is too large"),
        (Compacted, "OUT_OF_RANGE", "etcdserver: mvcc: required revision has been compacted"),
        (FutureRevision, "OUT_OF_RANGE",
         "etcdserver: mvcc: required revision is a future revision"),
        (LeaseTTLTooLarge, "OUT_OF_RANGE", "etcdserver: too large lease TTL"),
        (LeaseNotFound, "NOT_FOUND", "etcdserver: requested lease not found"),
        (LeaseExists, "FAILED_PRECONDITION", "etcdserver: lease already exists"),
        (NotLeader, "FAILED_PRECONDITION", "etcdserver: not leader"),
    ],
)
def test_error_codes_and_messages(cls: type[CoordError], code: str, message: str) -> None:
    err = cls()
    assert (status_code(err).name, str(err)) == (code, message)
