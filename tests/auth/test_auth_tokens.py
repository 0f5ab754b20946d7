"""Simple tokens over gRPC against an in-process member (its token TTL shortened to 3 s:
``ServerConfig.auth_token_ttl``, the ``--auth-token-ttl`` flag): a token used within its
TTL stays valid, an idle one expires with ``invalid auth token`` and no data, a new login
works; AuthStatus reports the enabled flag and the auth revision; a watch on a range the
user may not read is refused at creation while the stream serves the user's permitted
watch."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from coord.pb import auth_pb2, rpc_pb2, rpc_pb2_grpc
from coord.server.server import CoordServer
from tests.helpers.member import member_config

pytestmark = pytest.mark.timeout(60)
TTL = 3


async def _setup(stubs: dict[str, Any]) -> None:
    auth, kv = stubs["auth"], stubs["kv"]
    # A hash sent by the client is ignored (it once reached the applier: INTERNAL).
    await auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password="rootpw",
                                                  hashedPassword="0"))
    await auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
    await auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="u", password="upw"))
    await auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="r"))
    await auth.RoleGrantPermission(rpc_pb2.AuthRoleGrantPermissionRequest(
        name="r", perm=auth_pb2.Permission(key=b"a/", range_end=b"a0",
                                           permType=auth_pb2.Permission.READ)))
    await auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="u", role="r"))
    await kv.Put(rpc_pb2.PutRequest(key=b"a/1", value=b"v"))
    await auth.AuthEnable(rpc_pb2.AuthEnableRequest())


async def _login(auth: Any, name: str, password: str) -> list[tuple[str, str]]:
    resp = await auth.Authenticate(rpc_pb2.AuthenticateRequest(name=name, password=password))
    return [("token", resp.token)]


async def _scenario(server: CoordServer) -> None:
    async with grpc.aio.insecure_channel(server.config.listen_client) as ch:
        stubs = {"auth": rpc_pb2_grpc.AuthStub(ch), "kv": rpc_pb2_grpc.KVStub(ch)}
        kv: Any = stubs["kv"]
        status = await stubs["auth"].AuthStatus(rpc_pb2.AuthStatusRequest())
        assert (status.enabled, status.authRevision) == (False, 0)
        await _setup(stubs)
        md = await _login(stubs["auth"], "u", "upw")
        status = await stubs["auth"].AuthStatus(rpc_pb2.AuthStatusRequest(), metadata=md)
        # six changes (two users, two grants of a role, a role, a permission); enabling
        # keeps the revision
        assert (status.enabled, status.authRevision) == (True, 6)
        assert status.header.revision > 0
        await _login(stubs["auth"], "root", "rootpw")
        read = rpc_pb2.RangeRequest(key=b"a/1")

        # Used every 0.5 s for 2 TTLs: each use renews it.
        until = time.monotonic() + 2 * TTL
        while time.monotonic() < until:
            assert (await kv.Range(read, metadata=md)).kvs[0].value == b"v"
            await asyncio.sleep(0.5)
        # Idle for longer than the TTL: refused, no data.
        await asyncio.sleep(TTL + 0.5)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await kv.Range(read, metadata=md)
        assert (err.value.code(), err.value.details()) == (
            grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
        md = await _login(stubs["auth"], "u", "upw")
        assert (await kv.Range(read, metadata=md)).count == 1

        # Watch: the denied create is answered at once; the permitted one delivers.
        watch: Any = rpc_pb2_grpc.WatchStub(ch)
        requests: asyncio.Queue[rpc_pb2.WatchRequest | None] = asyncio.Queue()

        async def gen() -> Any:
            while (req := await requests.get()) is not None:
                yield req

        call = watch.Watch(gen(), metadata=md)
        requests.put_nowait(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=b"b/", range_end=b"b0")))
        denied = await asyncio.wait_for(call.read(), 10)
        assert (denied.watch_id, denied.created, denied.canceled, denied.cancel_reason) == (
            -1, True, True,
            "rpc error: code = PermissionDenied desc = etcdserver: permission denied")
        requests.put_nowait(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=b"a/", range_end=b"a0", start_revision=1)))
        created = await asyncio.wait_for(call.read(), 10)
        assert created.created and not created.canceled
        events = await asyncio.wait_for(call.read(), 10)
        assert [e.kv.key for e in events.events] == [b"a/1"]
        call.cancel()


def test_token_ttl_renewal_expiry_and_watch_checks(tmp_path: Path) -> None:
    async def main() -> None:
        config = member_config(tmp_path / "n1")
        config.auth_token_ttl = TTL
        server = CoordServer(config)
        await server.start()
        try:
            await _scenario(server)
        finally:
            await server.stop()

    asyncio.run(main())
