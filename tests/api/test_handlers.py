"""The method tables built from the protobuf descriptors (``coord.rpc.handlers``): the
tables are what grpcio's generated code builds, coord's status codes are grpcio's, and a
member answers a grpcio client with etcd's results and errors (codes and messages), aborts
inside streams, ``hasleader``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, cast

import grpc

from coord.api.services import ClientHandlers, client_handlers
from coord.api.watch import WatchService
from coord.pb import raft_pb2_grpc, rpc_pb2, rpc_pb2_grpc
from coord.rpc.h2.server import H2Server
from coord.rpc.handlers import MethodHandler
from coord.rpc.status import StatusCode, grpc_code
from coord.server.server import CoordServer
from coord.server.transport import PeerService, peer_handlers
from tests.api.h2_support import LISTEN, run, within
from tests.helpers.member import member_config

Outcome = tuple[str, str]


def test_status_codes_are_grpcs() -> None:
    assert [(c.name, c.value) for c in StatusCode] == \
        [(c.name, c.value[0]) for c in grpc.StatusCode]
    assert all(grpc_code(c) is grpc.StatusCode[c.name] for c in StatusCode)


class _Generated:
    """Stands in for a server in the generated ``add_*Servicer_to_server`` functions."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        for method, handler in handlers.items():
            self.handlers[f"/{service}/{method}"] = handler


def _same(ours: MethodHandler, theirs: Any) -> None:
    assert (ours.request_streaming, ours.response_streaming) == \
        (theirs.request_streaming, theirs.response_streaming)
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        mine, generated = getattr(ours, kind), getattr(theirs, kind)
        assert (mine is None) == (generated is None), kind
        if mine is not None:  # the same method of the same class
            assert mine.__func__ is generated.__func__
            assert type(mine.__self__) is type(generated.__self__)
    # The same parsing and serialisation: the generated message classes' own methods.
    assert ours.request_deserializer == theirs.request_deserializer
    assert ours.response_serializer == theirs.response_serializer


def test_the_tables_are_what_the_generated_code_builds() -> None:
    core: Any = None  # no method runs here
    watch = WatchService(core)
    ours = client_handlers(core, watch)
    generated = _Generated()
    for name in ("KV", "Lease", "Watch", "Maintenance", "Cluster", "Auth"):
        service = watch if name == "Watch" else next(
            h.behaviour.__self__ for m, h in ours.items()
            if m.startswith(f"/etcdserverpb.{name}/"))
        getattr(rpc_pb2_grpc, f"add_{name}Servicer_to_server")(service, generated)
    assert sorted(ours) == sorted(generated.handlers)
    for method, handler in ours.items():
        _same(handler, generated.handlers[method])

    peer = PeerService(cast(Any, None), cast(Any, None), cast(Any, None), cast(Any, None))
    peer_generated = _Generated()
    raft_pb2_grpc.add_PeerServicer_to_server(peer, peer_generated)
    peers = peer_handlers(peer)
    assert sorted(peers) == sorted(peer_generated.handlers)
    for method, handler in peers.items():
        _same(handler, peer_generated.handlers[method])


def test_messages_are_the_generated_classes() -> None:
    table = client_handlers(cast(Any, None), WatchService(cast(Any, None)))
    range_ = table["/etcdserverpb.KV/Range"]
    assert range_.request_deserializer is not None and range_.response_serializer is not None
    assert type(range_.request_deserializer(b"")) is rpc_pb2.RangeRequest
    resp = rpc_pb2.RangeResponse(count=3)
    assert range_.response_serializer(resp) == resp.SerializeToString()


# -- both servers, one client --------------------------------------------------------------

async def _code(aw: Awaitable[Any]) -> Outcome:
    try:
        await aw
    except grpc.aio.AioRpcError as err:
        return err.code().name, err.details() or ""
    return "OK", ""


async def _stream_outcome(call: Any, request: Any) -> tuple[list[str], Outcome]:
    """Write ``request`` (unless None), read one response: what came, how the call ended."""
    got: list[str] = []
    try:
        if request is not None:
            await call.write(request)
        resp = await call.read()
        got.append(type(resp).__name__)
    except grpc.aio.AioRpcError as err:
        return got, (err.code().name, err.details() or "")
    finally:
        call.cancel()
    return got, ("OK", "")


async def _answers(endpoint: str) -> list[Any]:
    big = b"v" * (2 * 1024 * 1024)
    async with grpc.aio.insecure_channel(endpoint) as ch:
        kv, lease = rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.LeaseStub(ch)
        cluster, auth = rpc_pb2_grpc.ClusterStub(ch), rpc_pb2_grpc.AuthStub(ch)
        put = await kv.Put(rpc_pb2.PutRequest(key=b"/h/a", value=b"1"), timeout=5)
        got = await kv.Range(rpc_pb2.RangeRequest(key=b"/h/a"), timeout=5)
        out: list[Any] = [[(k.key, k.value, k.mod_revision == put.header.revision)
                           for k in got.kvs]]
        out.append(await _code(kv.Range(
            rpc_pb2.RangeRequest(key=b"/h/a", revision=put.header.revision + 100), timeout=5)))
        out.append(await _code(kv.Put(rpc_pb2.PutRequest(key=b"", value=b"x"), timeout=5)))
        out.append(await _code(kv.Put(rpc_pb2.PutRequest(key=b"/h/big", value=big),
                                      timeout=5)))
        out.append(await _code(cluster.MemberUpdate(rpc_pb2.MemberUpdateRequest(ID=1),
                                                    timeout=5)))
        out.append(await _code(auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=5)))
        out.append(await _code(lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=12345),
                                                 timeout=5)))
        out.append(await _stream_outcome(lease.LeaseKeepAlive(timeout=5),
                                         rpc_pb2.LeaseKeepAliveRequest(ID=12345)))
        granted = await lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=5)
        out.append(await _stream_outcome(lease.LeaseKeepAlive(timeout=5),
                                         rpc_pb2.LeaseKeepAliveRequest(ID=granted.ID)))
        watch = rpc_pb2_grpc.WatchStub(ch).Watch(timeout=5)
        out.append(await _stream_outcome(watch, rpc_pb2.WatchRequest(
            create_request=rpc_pb2.WatchCreateRequest(key=b"/h/a"))))
    return out


def _member_answers(tmp_path: Path) -> list[Any]:
    async def main() -> list[Any]:
        config = member_config(tmp_path / "n1")
        server = CoordServer(config)
        await server.start()
        try:
            async with asyncio.timeout(30):
                return await _answers(config.listen_client)
        finally:
            await server.stop(0)

    return asyncio.run(main())


def test_a_member_answers_with_etcds_results_and_errors(tmp_path: Path) -> None:
    h2 = _member_answers(tmp_path)
    assert h2[0] == [(b"/h/a", b"1", True)]
    assert h2[1] == ("OUT_OF_RANGE", "etcdserver: mvcc: required revision is a future revision")
    assert h2[2] == ("INVALID_ARGUMENT", "etcdserver: key is not provided")
    assert h2[3][0] == "RESOURCE_EXHAUSTED"
    assert h2[3][1].startswith("grpc: received message larger than max (")
    assert h2[4][0] == "UNIMPLEMENTED"
    assert h2[5] == ("FAILED_PRECONDITION", "etcdserver: root user does not exist")
    assert h2[6] == ("NOT_FOUND", "etcdserver: requested lease not found")
    assert h2[7] == (["LeaseKeepAliveResponse"], ("OK", ""))  # TTL 0: the lease is gone
    assert h2[8] == (["LeaseKeepAliveResponse"], ("OK", ""))
    assert h2[9] == (["WatchResponse"], ("OK", ""))


class _Leaderless:
    leader_id = 0


def test_hasleader_refusals() -> None:
    table = client_handlers(cast(Any, None), WatchService(cast(Any, None)))  # never run
    handlers = ClientHandlers(_Leaderless(), table)
    hasleader = (("hasleader", "true"),)

    async def body() -> list[Outcome]:
        server = H2Server(handlers.service, max_receive=1 << 20)
        port = await server.start(LISTEN)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                kv = rpc_pb2_grpc.KVStub(ch)
                unary = await _code(kv.Range(rpc_pb2.RangeRequest(key=b"k"),
                                             metadata=hasleader, timeout=5))
                watch = rpc_pb2_grpc.WatchStub(ch).Watch(metadata=hasleader, timeout=5)
                # Read only: a grpcio client writing to a stream the h2 server has already
                # ended sometimes reports INTERNAL instead of the status (it did before).
                _, stream = await _stream_outcome(watch, None)
                return [unary, stream]
        finally:
            await within(server.stop(0))

    assert run(body()) == [("UNAVAILABLE", "etcdserver: no leader")] * 2
    # Refusals are made once per method, not per call.
    assert handlers.service(_Details("/etcdserverpb.KV/Range", hasleader)) is \
        handlers.service(_Details("/etcdserverpb.KV/Range", hasleader))


class _Details:
    def __init__(self, method: str, metadata: tuple[tuple[str, str], ...]) -> None:
        self.method = method
        self.invocation_metadata = metadata
