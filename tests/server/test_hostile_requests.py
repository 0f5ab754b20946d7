"""Issue 15 item 1: a request with out-of-range enum fields is refused before it is proposed
(etcd 3.5's ErrGRPCInvalidSortOption), and the applier is total — a committed request that
fails answers an error, changes nothing, and never raises anything else."""

from __future__ import annotations

import pytest

from coord.api.errors import status_code
from coord.errors import ApplyFailed, InvalidSortOption
from coord.pb import internal_pb2, rpc_pb2
from coord.server import validate
from coord.server.apply import Applier


def _range(key: bytes, sort_order: int = 0, sort_target: int = 0) -> rpc_pb2.RangeRequest:
    """A RangeRequest with raw enum numbers (proto3 keeps numbers it has no name for)."""
    r = rpc_pb2.RangeRequest(key=key, range_end=b"\0")
    r.sort_order = sort_order  # type: ignore[assignment]
    r.sort_target = sort_target  # type: ignore[assignment]
    return r


BAD = _range(b"a", sort_order=1, sort_target=9)


def _txn_with(r: rpc_pb2.RangeRequest, nested: bool = False) -> rpc_pb2.TxnRequest:
    t = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
        key=b"x", value=b"1")), rpc_pb2.RequestOp(request_range=r)])
    if nested:
        t = rpc_pb2.TxnRequest(failure=[rpc_pb2.RequestOp(request_txn=t)])
    return t


@pytest.mark.parametrize("fields", [dict(sort_order=1, sort_target=9),
                                    dict(sort_order=3), dict(sort_order=-1),
                                    dict(sort_target=5)])
def test_bad_sort_fields_are_refused_everywhere(fields: dict[str, int]) -> None:
    r = _range(b"a", **fields)
    with pytest.raises(InvalidSortOption, match="etcdserver: invalid sort option"):
        validate.check_range(r)
    for nested in (False, True):
        with pytest.raises(InvalidSortOption):
            validate.check_txn(_txn_with(r, nested))


def test_invalid_sort_option_is_invalid_argument() -> None:
    assert status_code(InvalidSortOption()).name == "INVALID_ARGUMENT"


def test_apply_of_a_bad_txn_answers_an_error_and_changes_nothing() -> None:
    """The entry that bricked the cluster: applied anyway (an old member's log), it is
    answered ApplyFailed, the put before the failing range is rolled back, and the next
    request applies normally."""
    a = Applier()
    a.apply(internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=b"a", value=b"1")), 0.0)
    a.apply(internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=b"b", value=b"2")), 0.0)
    rev, snap = a.current_revision, a.snapshot()
    for nested in (False, True):
        req = _txn_with(BAD, nested)
        if nested:  # take the failure branch: a compare that is false
            req.compare.add(key=b"a", target=rpc_pb2.Compare.VERSION, version=7)
        with pytest.raises(ApplyFailed):
            a.apply(internal_pb2.InternalRequest(txn=req), 0.0)
        assert a.current_revision == rev and a.snapshot() == snap
    with pytest.raises(ApplyFailed):
        a.apply(internal_pb2.InternalRequest(range=BAD), 0.0)
    resp = a.apply(internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=b"x", value=b"2")),
                   0.0)
    assert resp is not None and resp.header.revision == rev + 1


@pytest.mark.parametrize(("result", "succeeded"), [(rpc_pb2.Compare.EQUAL, True),
                                                   (rpc_pb2.Compare.NOT_EQUAL, False),
                                                   (rpc_pb2.Compare.GREATER, False),
                                                   (rpc_pb2.Compare.LESS, False), (7, True)])
def test_unnamed_compare_target_compares_equal_as_in_etcd(result: int,
                                                          succeeded: bool) -> None:
    """etcd's compareKV leaves the comparison at 0 for a target it has no case for, then
    applies the result; an unnamed result is true."""
    a = Applier()
    a.apply(internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=b"a", value=b"1")), 0.0)
    c = rpc_pb2.Compare(key=b"a", version=5)
    c.target = 9  # type: ignore[assignment]
    c.result = result  # type: ignore[assignment]
    resp = a.apply(internal_pb2.InternalRequest(txn=rpc_pb2.TxnRequest(compare=[c])), 0.0)
    assert isinstance(resp, rpc_pb2.TxnResponse) and resp.succeeded is succeeded
