"""The applier against etcd 3.4 rules: revisions, ranges, puts and leases, txns, snapshots."""

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
from coord.server.apply import Applier, lease_id_for
from tests.server.reqs import RR, Client, cmp, delete, kvs, put, rng, txn, txn_op


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
