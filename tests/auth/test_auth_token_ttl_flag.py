"""``--auth-token-ttl`` on ``coord serve`` and ``agent``, as etcd's flag: a real etcd and
a coord member, each started with ``--auth-token-ttl 2``, side by side. A token used
within its TTL stays valid; an idle one is refused with etcd's ``invalid auth token`` on
both; a new login works. A TTL under one second is refused before the member starts: one
``Error:`` line, exit 2, no data dir."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from coord.pb import rpc_pb2, rpc_pb2_grpc
from tests.helpers.binaries import require_binary
from tests.helpers.procs import REPO, ProcessGroup, free_port, start_coord, start_etcd

pytestmark = pytest.mark.timeout(90)
TTL = 2
ETCD_RESOLUTION = 1.0
"""etcd's simple-token keeper looks for expired tokens once a second."""


async def _token_lifecycle(endpoint: str) -> list[str]:
    """What a client sees, as one line per step: the same list on etcd and on coord."""
    seen = []
    async with grpc.aio.insecure_channel(endpoint) as ch:
        auth = rpc_pb2_grpc.AuthStub(ch)
        kv = rpc_pb2_grpc.KVStub(ch)
        await kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"))
        await auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password="rootpw"))
        await auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
        await auth.AuthEnable(rpc_pb2.AuthEnableRequest())

        async def login() -> list[tuple[str, str]]:
            resp = await auth.Authenticate(rpc_pb2.AuthenticateRequest(name="root",
                                                                      password="rootpw"))
            return [("token", resp.token)]

        md = await login()
        read = rpc_pb2.RangeRequest(key=b"k")
        # Used every half second for twice the TTL: each use renews it.
        uses = 0
        until = time.monotonic() + 2 * TTL
        while time.monotonic() < until:
            assert (await kv.Range(read, metadata=md)).kvs[0].value == b"v"
            uses += 1
            await asyncio.sleep(0.5)
        seen.append(f"used {2 * TTL} s: valid" if uses >= 2 * TTL else f"{uses} uses")
        # Idle past the TTL (and etcd's one-second sweep): refused, no data.
        await asyncio.sleep(TTL + ETCD_RESOLUTION + 0.5)
        try:
            resp = await kv.Range(read, metadata=md)
            seen.append(f"idle: still valid ({resp.count} keys)")
        except grpc.aio.AioRpcError as err:
            seen.append(f"idle: {err.code().name} {err.details()}")
        md = await login()
        seen.append(f"new login: {(await kv.Range(read, metadata=md)).count} key")
    return seen


def test_an_idle_token_expires_after_the_ttl_on_etcd_and_on_coord(procs: ProcessGroup) -> None:
    etcd = start_etcd(procs, etcd_bin=require_binary("etcd"),
                      flags=["--auth-token-ttl", str(TTL)])
    coord = start_coord(procs, flags=["--auth-token-ttl", str(TTL)])

    async def both() -> tuple[list[str], list[str]]:
        a, b = await asyncio.gather(_token_lifecycle(etcd.endpoint),
                                    _token_lifecycle(coord.endpoint))
        return a, b

    on_etcd, on_coord = asyncio.run(both())
    assert on_etcd == [f"used {2 * TTL} s: valid",
                       "idle: UNAUTHENTICATED etcdserver: invalid auth token",
                       "new login: 1 key"]
    assert on_coord == on_etcd


@pytest.mark.parametrize("command", [["coord", "serve"], ["agent"]])
@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_ttl_under_a_second_is_refused_before_the_member_starts(
        tmp_path: Path, command: list[str], value: str) -> None:
    data = tmp_path / "data"
    res = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", *command, "--data-dir", str(data),
         "--listen-client", f"127.0.0.1:{free_port()}",
         "--listen-peer", f"127.0.0.1:{free_port()}", "--auth-token-ttl", value],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
        env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stderr.strip().splitlines() == [
        f"Error: --auth-token-ttl: expected at least 1 second, got {value}"], res.stderr
    assert not data.exists()
