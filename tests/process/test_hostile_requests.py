"""Requests that once brought a whole cluster down (issue: a Txn whose Range asked for
sort_target=9 made every member raise at apply, exit, and die again replaying it at every
restart). Each is refused with newer etcd's error before it is proposed, every member stays
up, and the cluster keeps committing."""

from __future__ import annotations

import grpc
import pytest

from coord.pb import rpc_pb2, rpc_pb2_grpc
from tests.helpers.procs import ProcessGroup
from tests.process.cluster import CoordCluster

pytestmark = pytest.mark.timeout(120)

INVALID_SORT = ("INVALID_ARGUMENT", "etcdserver: invalid sort option")


def _range(**kw: int) -> rpc_pb2.RangeRequest:
    return rpc_pb2.RangeRequest(key=b"k", **kw)  # type: ignore[arg-type]


def _txn_with(r: rpc_pb2.RangeRequest, where: str) -> rpc_pb2.TxnRequest:
    op = rpc_pb2.RequestOp(request_range=r)
    put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"w", value=b"x"))
    if where == "success":
        return rpc_pb2.TxnRequest(success=[put, op])
    if where == "failure":
        return rpc_pb2.TxnRequest(failure=[op])
    inner = rpc_pb2.TxnRequest(success=[op])
    return rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_txn=inner)])


def _call(endpoint: str, method: str, req: object) -> tuple[str, str]:
    with grpc.insecure_channel(endpoint) as ch:
        try:
            getattr(rpc_pb2_grpc.KVStub(ch), method)(req, timeout=5)
        except grpc.RpcError as err:
            return err.code().name, err.details() or ""
    return "OK", ""


def test_bad_sort_fields_are_refused_and_no_member_dies(procs: ProcessGroup) -> None:
    c = CoordCluster(procs, size=3, faults=False)
    c.start()
    endpoint = c.members["n1"].endpoint
    bad = [_range(sort_order=1, sort_target=9), _range(sort_order=7),
           _range(sort_order=2, sort_target=-1)]
    for r in bad:
        assert _call(endpoint, "Range", r) == INVALID_SORT
        for where in ("success", "failure", "nested"):
            assert _call(endpoint, "Txn", _txn_with(r, where)) == INVALID_SORT, where
    # Every valid combination still answers.
    for order in (0, 1, 2):
        for target in range(5):
            assert _call(endpoint, "Range", _range(sort_order=order, sort_target=target))[0] == "OK"
    assert all(m.alive() for m in c.members.values()), c.logs()
    for m in c.members.values():  # every member still takes part in commits
        assert _call(m.endpoint, "Put", rpc_pb2.PutRequest(key=b"after", value=m.name.encode()))[
            0] == "OK", c.logs()
    assert "Traceback" not in c.logs()
