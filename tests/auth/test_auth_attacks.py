"""Attacks on auth, bounded in count and time, against an in-process member: a flood of
logins with wrong passwords and of forged tokens is refused with etcd's errors, leaves no
state behind (no token recorded, nothing written) and the member keeps serving its
legitimate user meanwhile."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from coord.pb import rpc_pb2, rpc_pb2_grpc
from coord.server.server import CoordServer
from tests.helpers.member import member_config

pytestmark = pytest.mark.timeout(90)
LOGINS = 60
FORGED = 500


async def _attack(server: CoordServer) -> None:
    async with grpc.aio.insecure_channel(server.config.listen_client) as ch:
        auth: Any = rpc_pb2_grpc.AuthStub(ch)
        kv: Any = rpc_pb2_grpc.KVStub(ch)
        await auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password="rootpw"))
        await auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
        await auth.AuthEnable(rpc_pb2.AuthEnableRequest())
        token = (await auth.Authenticate(rpc_pb2.AuthenticateRequest(
            name="root", password="rootpw"))).token
        md = [("token", token)]
        await kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), metadata=md)
        store = server.applier.auth
        tokens, revision = store.token_count, server.applier.current_revision

        async def wrong_login(i: int) -> tuple[grpc.StatusCode, str]:
            try:
                await auth.Authenticate(rpc_pb2.AuthenticateRequest(
                    name="root", password=f"guess-{i}"), timeout=60)
            except grpc.aio.AioRpcError as err:
                return err.code(), err.details() or ""
            return grpc.StatusCode.OK, ""

        async def forged(i: int) -> tuple[grpc.StatusCode, str]:
            try:
                await kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"x"),
                             metadata=[("token", f"forged{i}.{i}")], timeout=30)
            except grpc.aio.AioRpcError as err:
                return err.code(), err.details() or ""
            return grpc.StatusCode.OK, ""

        flood = asyncio.gather(*(wrong_login(i) for i in range(LOGINS)),
                               *(forged(i) for i in range(FORGED)))
        # Meanwhile the legitimate user is served: each read answers within 3 s.
        reads = 0
        while not flood.done():
            t0 = time.monotonic()
            got = await kv.Range(rpc_pb2.RangeRequest(key=b"k"), metadata=md, timeout=3)
            assert got.kvs[0].value == b"v" and time.monotonic() - t0 < 3
            reads += 1
        answers = await flood
        assert reads >= 1
        assert answers[:LOGINS] == [(
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: authentication failed, invalid user ID or password")] * LOGINS
        assert answers[LOGINS:] == [
            (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")] * FORGED
        assert store.token_count == tokens  # nothing recorded for a refused login
        assert server.applier.current_revision == revision  # nothing written
        got = await kv.Range(rpc_pb2.RangeRequest(key=b"k"), metadata=md)
        assert got.kvs[0].value == b"v"


def test_login_and_forged_token_floods_are_refused_and_service_continues(
        tmp_path: Path) -> None:
    async def main() -> None:
        server = CoordServer(member_config(tmp_path / "n1"))
        await server.start()
        try:
            await _attack(server)
        finally:
            await server.stop()

    asyncio.run(main())
