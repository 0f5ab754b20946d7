"""Promise 6 at the API: bad requests get etcd's error, change nothing, and the server keeps
serving. Each case runs against a real etcd and coord side by side, and both must answer
with the same status code and message."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from coord.pb import rpc_pb2, rpc_pb2_grpc
from tests.helpers.binaries import require_binary
from tests.helpers.procs import process_group, start_coord, start_etcd

Stub = rpc_pb2_grpc.KVStub


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    etcd_bin = require_binary("etcd")
    with process_group(Path(tmp_path_factory.mktemp("badinput"))) as group:
        etcd = start_etcd(group, etcd_bin=etcd_bin)
        coord = start_coord(group)
        yield {"etcd": etcd.endpoint, "coord": coord.endpoint}


def _call(endpoint: str, fn: Callable[[grpc.Channel], object]) -> tuple[str, str]:
    with grpc.insecure_channel(endpoint, options=[
            ("grpc.max_send_message_length", 8 << 20)]) as ch:
        try:
            fn(ch)
        except grpc.RpcError as err:
            return err.code().name, err.details() or ""
    return "OK", ""


def _revision(endpoint: str) -> int:
    with grpc.insecure_channel(endpoint) as ch:
        r = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"),
                                          timeout=5)
        return int(r.header.revision)


def kv(ch: grpc.Channel) -> Stub:
    return rpc_pb2_grpc.KVStub(ch)


def lease(ch: grpc.Channel) -> rpc_pb2_grpc.LeaseStub:
    return rpc_pb2_grpc.LeaseStub(ch)


def put_req(key: bytes, value: bytes = b"v", **kw: object) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, **kw))


CASES: dict[str, tuple[Callable[[grpc.Channel], object], str, str]] = {
    "put empty key": (lambda ch: kv(ch).Put(rpc_pb2.PutRequest(key=b"", value=b"x")),
                      "INVALID_ARGUMENT", "etcdserver: key is not provided"),
    "range empty key": (lambda ch: kv(ch).Range(rpc_pb2.RangeRequest(key=b"")),
                        "INVALID_ARGUMENT", "etcdserver: key is not provided"),
    "delete empty key": (lambda ch: kv(ch).DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"")),
                         "INVALID_ARGUMENT", "etcdserver: key is not provided"),
    "put 1.6 MiB": (lambda ch: kv(ch).Put(rpc_pb2.PutRequest(key=b"big",
                                                             value=b"x" * (1600 << 10))),
                    "INVALID_ARGUMENT", "etcdserver: request is too large"),
    "put 2.1 MiB": (lambda ch: kv(ch).Put(rpc_pb2.PutRequest(key=b"big",
                                                             value=b"x" * (2150 << 10))),
                    "RESOURCE_EXHAUSTED", ""),
    "put unknown lease": (lambda ch: kv(ch).Put(rpc_pb2.PutRequest(key=b"k", value=b"v",
                                                                   lease=12345)),
                          "NOT_FOUND", "etcdserver: requested lease not found"),
    "ignore_value with value": (
        lambda ch: kv(ch).Put(rpc_pb2.PutRequest(key=b"k", value=b"v", ignore_value=True)),
        "INVALID_ARGUMENT", "etcdserver: value is provided"),
    "ignore_lease on missing key": (
        lambda ch: kv(ch).Put(rpc_pb2.PutRequest(key=b"nokey-x", ignore_lease=True)),
        "INVALID_ARGUMENT", "etcdserver: key not found"),
    "txn duplicate put": (
        lambda ch: kv(ch).Txn(rpc_pb2.TxnRequest(success=[put_req(b"d"), put_req(b"d")])),
        "INVALID_ARGUMENT", "etcdserver: duplicate key given in txn request"),
    "txn 129 ops": (
        lambda ch: kv(ch).Txn(rpc_pb2.TxnRequest(
            success=[put_req(f"m{i}".encode()) for i in range(129)])),
        "INVALID_ARGUMENT", "etcdserver: too many operations in txn request"),
    "txn empty op": (lambda ch: kv(ch).Txn(rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp()])),
                     "INVALID_ARGUMENT", "etcdserver: key not found"),
    "txn empty compare key": (
        lambda ch: kv(ch).Txn(rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare(key=b"")])),
        "INVALID_ARGUMENT", "etcdserver: key is not provided"),
    "txn put with unknown lease": (
        lambda ch: kv(ch).Txn(rpc_pb2.TxnRequest(success=[put_req(b"tl", lease=777)])),
        "NOT_FOUND", "etcdserver: requested lease not found"),
    "range future revision": (
        lambda ch: kv(ch).Range(rpc_pb2.RangeRequest(key=b"k", revision=10**9)),
        "OUT_OF_RANGE", "etcdserver: mvcc: required revision is a future revision"),
    "compact future": (lambda ch: kv(ch).Compact(rpc_pb2.CompactionRequest(revision=10**9)),
                       "OUT_OF_RANGE", "etcdserver: mvcc: required revision is a future revision"),
    "revoke unknown lease": (lambda ch: lease(ch).LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=99)),
                             "NOT_FOUND", "etcdserver: requested lease not found"),
    "lease TTL too large": (
        lambda ch: lease(ch).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=9_000_000_001)),
        "OUT_OF_RANGE", "etcdserver: too large lease TTL"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_request_same_error_as_etcd_and_nothing_written(servers: dict[str, str],
                                                            name: str) -> None:
    fn, code, message = CASES[name]
    answers = {}
    for which, endpoint in servers.items():
        before = _revision(endpoint)
        answers[which] = _call(endpoint, fn)
        assert _revision(endpoint) == before, f"{which}: a rejected request changed the store"
    assert answers["coord"][0] == code
    if message:
        assert answers["coord"][1] == message
    else:  # the transport limit: grpc-go's wording, with the sizes
        assert answers["coord"][1].startswith("grpc: received message larger than max (")
    assert answers["coord"] == answers["etcd"], answers


def test_garbage_on_the_port_does_not_hurt(servers: dict[str, str]) -> None:
    endpoint = servers["coord"]
    host, port = endpoint.rsplit(":", 1)
    for payload in (os.urandom(4096), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(512)):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(payload)
            s.settimeout(2)
            with contextlib.suppress(TimeoutError, ConnectionError):
                s.recv(1024)
    status, _ = _call(endpoint,
                      lambda ch: kv(ch).Put(rpc_pb2.PutRequest(key=b"after", value=b"ok")))
    assert status == "OK", "the server stopped serving after garbage on its port"
