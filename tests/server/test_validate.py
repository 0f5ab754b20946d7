"""v3rpc pre-proposal checks: exact errors, etcd's checkIntervals rules."""

from __future__ import annotations

import pytest

from coord.errors import (
    DuplicateKey,
    EmptyKey,
    KeyNotFound,
    LeaseProvided,
    RequestTooLarge,
    TooManyOps,
    ValueProvided,
)
from coord.pb import internal_pb2, rpc_pb2
from coord.server import validate
from tests.server.reqs import cmp, delete, put, rng, txn, txn_op


def test_put_checks_in_etcd_order() -> None:
    with pytest.raises(EmptyKey):
        validate.check_put(rpc_pb2.PutRequest(value=b"v", ignore_value=True))
    with pytest.raises(ValueProvided):
        validate.check_put(rpc_pb2.PutRequest(key=b"k", value=b"v", ignore_value=True, lease=1,
                                              ignore_lease=True))
    with pytest.raises(LeaseProvided):
        validate.check_put(rpc_pb2.PutRequest(key=b"k", lease=1, ignore_lease=True))
    validate.check_put(rpc_pb2.PutRequest(key=b"k", ignore_value=True, ignore_lease=True))


def test_range_and_delete_need_a_key() -> None:
    with pytest.raises(EmptyKey):
        validate.check_range(rpc_pb2.RangeRequest(range_end=b"\0"))
    with pytest.raises(EmptyKey):
        validate.check_delete_range(rpc_pb2.DeleteRangeRequest(range_end=b"\0"))
    validate.check_range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"))


@pytest.mark.parametrize(
    "t",
    [
        txn([], [put(b"k"), put(b"k")]),
        txn([], [], [put(b"k"), put(b"k")]),
        txn([], [delete(b"k"), put(b"k")]),
        txn([], [put(b"b"), delete(b"a", b"c")]),
        txn([], [put(b"k"), txn_op([], [put(b"k")])]),
        txn([], [put(b"k"), txn_op([], [], [put(b"k")])]),
        txn([], [delete(b"k"), txn_op([], [put(b"k")])]),
        txn([], [txn_op([], [delete(b"a", b"z")]), put(b"k")]),
        txn([], [txn_op([], [put(b"k")]), txn_op([], [put(b"k")])]),
        txn([], [txn_op([], [txn_op([], [put(b"k")])]), put(b"k")]),
        txn([], [txn_op([], [put(b"k")], [put(b"j")]), txn_op([], [put(b"j")])]),
    ],
)
def test_duplicate_keys(t: rpc_pb2.TxnRequest) -> None:
    with pytest.raises(DuplicateKey):
        validate.check_txn(t)


@pytest.mark.parametrize(
    "t",
    [
        txn([], [put(b"k")], [put(b"k")]),
        txn([], [delete(b"k"), delete(b"k")]),
        txn([], [put(b"k"), rng(b"k")]),
        txn([], [put(b"c"), delete(b"a", b"c")]),
        txn([], [txn_op([], [put(b"k")], [put(b"k")])]),
        txn([], [txn_op([], [delete(b"k")]), txn_op([], [delete(b"k")])]),
        # etcd's interval check takes "\0" literally: [k, "\0") is empty, so no clash
        txn([], [put(b"k"), delete(b"a", b"\0")]),
    ],
)
def test_allowed_overlaps(t: rpc_pb2.TxnRequest) -> None:
    validate.check_txn(t)


def test_op_limits() -> None:
    validate.check_txn(txn([cmp(b"k", "VERSION", "EQUAL", 0)] * 128, [rng(b"k")] * 128,
                           [rng(b"k")] * 128))
    for bad in (
        txn([cmp(b"k", "VERSION", "EQUAL", 0)] * 129),
        txn([], [rng(b"k")] * 129),
        txn([], [], [rng(b"k")] * 129),
    ):
        with pytest.raises(TooManyOps):
            validate.check_txn(bad)
    # a nested txn's budget is what its parent left
    validate.check_txn(txn([], [rng(b"k")] * 100 + [txn_op([], [rng(b"k")] * 27)]))
    with pytest.raises(TooManyOps):
        validate.check_txn(txn([], [rng(b"k")] * 100 + [txn_op([], [rng(b"k")] * 28)]))


def test_nested_ops_are_checked() -> None:
    with pytest.raises(KeyNotFound):
        validate.check_txn(txn([], [txn_op([], [rpc_pb2.RequestOp()])]))
    with pytest.raises(EmptyKey):
        validate.check_txn(txn([], [txn_op([cmp(b"", "MOD", "EQUAL", 0)])]))
    with pytest.raises(EmptyKey):
        validate.check_txn(txn([], [], [put(b"")]))
    with pytest.raises(ValueProvided):
        validate.check_txn(txn([], [put(b"k", b"v", ignore_value=True)]))
    with pytest.raises(EmptyKey):
        validate.check_txn(txn([], [delete(b"")]))


def test_request_size() -> None:
    limit = validate.MAX_REQUEST_BYTES
    ok = internal_pb2.InternalRequest(id=2**63, put=rpc_pb2.PutRequest(key=b"k", value=b"x"))
    ok.put.value = b"x" * (limit - ok.ByteSize())
    assert ok.ByteSize() >= limit - 8
    while ok.ByteSize() > limit:
        ok.put.value = ok.put.value[:-1]
    validate.check_request_size(ok)
    ok.put.value += b"x"
    with pytest.raises(RequestTooLarge):
        validate.check_request_size(ok)
