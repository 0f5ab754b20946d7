"""etcd's ``hasleader`` request metadata: on a member that knows no leader, a request that
carries ``hasleader=true`` fails at once with ``Unavailable: etcdserver: no leader`` (clients
use it on watches to move to a member that is part of a quorum); without the metadata the
member still serves what it can, such as serializable reads."""

from __future__ import annotations

import grpc
import pytest

from coord.pb import rpc_pb2, rpc_pb2_grpc
from tests.helpers.procs import ProcessGroup, coord_argv, free_port, port_open, wait_until

HASLEADER = (("hasleader", "true"),)


@pytest.fixture
def leaderless(procs: ProcessGroup) -> str:
    """One member of a 3-member cluster whose other members never start: no leader."""
    cport, pport = free_port(), free_port()
    cluster = f"n1=127.0.0.1:{pport},n2=127.0.0.1:{free_port()},n3=127.0.0.1:{free_port()}"
    proc = procs.spawn("n1", coord_argv("n1", procs.workdir / "n1", cport, pport, cluster),
                       cport)
    wait_until(lambda: port_open(cport) or not proc.alive(), 30, "coord listening")
    assert proc.alive(), proc.log()
    return proc.endpoint


def test_hasleader_requests_fail_fast_without_a_leader(leaderless: str) -> None:
    with grpc.insecure_channel(leaderless) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        with pytest.raises(grpc.RpcError) as unary:
            kv.Range(rpc_pb2.RangeRequest(key=b"k"), metadata=HASLEADER, timeout=5)
        assert unary.value.code() == grpc.StatusCode.UNAVAILABLE
        assert unary.value.details() == "etcdserver: no leader"

        watch = rpc_pb2_grpc.WatchStub(ch).Watch(
            iter([rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k"))]),
            metadata=HASLEADER, timeout=5)
        with pytest.raises(grpc.RpcError) as stream:
            next(watch)
        assert stream.value.code() == grpc.StatusCode.UNAVAILABLE
        assert stream.value.details() == "etcdserver: no leader"

        # Without the metadata the member answers what needs no leader.
        resp = kv.Range(rpc_pb2.RangeRequest(key=b"k", serializable=True), timeout=5)
        assert resp.count == 0
