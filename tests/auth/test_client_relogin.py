"""raftcron's client logs in again when its token dies (``invalid auth token``: its TTL
passed, the member restarted, or the password changed, as here): on coord and on a real
etcd, a watch opened with the dead token is created after a fresh login instead of
failing, and a read succeeds without the caller seeing an error."""

from __future__ import annotations

import asyncio
import subprocess

import grpc
import pytest

from coord.client import Client, ClientAuth
from coord.pb import rpc_pb2, rpc_pb2_grpc
from tests.helpers.procs import ProcessGroup, start_coord, start_etcd

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(params=["coord", "etcd"])
def store(request: pytest.FixtureRequest, procs: ProcessGroup, etcd_bin: str) -> str:
    if request.param == "coord":
        return start_coord(procs).endpoint
    return start_etcd(procs, etcd_bin=etcd_bin).endpoint


def ctl(bin_: str, ep: str, *args: str, stdin: str = "") -> None:
    res = subprocess.run([bin_, f"--endpoints={ep}", *args], capture_output=True, text=True,
                         input=stdin, timeout=30, check=False, env={"ETCDCTL_API": "3"})
    assert res.returncode == 0, (args, res.stderr)


def test_relogin_after_the_token_dies(store: str, etcdctl_bin: str) -> None:
    ep = store
    for args in (["user", "add", "root:rootpw"], ["user", "add", "alice:apw"],
                 ["role", "add", "app"],
                 ["role", "grant-permission", "--prefix=true", "app", "readwrite", "app/"],
                 ["user", "grant-role", "alice", "app"], ["auth", "enable"]):
        ctl(etcdctl_bin, ep, *args)

    async def body() -> None:
        async with Client([ep], auth=ClientAuth("alice", "apw")) as alice, \
                Client([ep], auth=ClientAuth("alice", "apw")) as writer:
            await alice.put("app/k", "v1")
            first = alice._tokens.token if alice._tokens else None
            assert first

            async def expired() -> bool:
                async with grpc.aio.insecure_channel(ep) as ch:
                    try:
                        await rpc_pb2_grpc.KVStub(ch).Range(  # type: ignore[misc]
                            rpc_pb2.RangeRequest(key=b"app/k"), metadata=(("token", first),),
                            timeout=5)
                    except grpc.aio.AioRpcError as err:
                        return "invalid auth token" in (err.details() or "")
                    return False
            # A password change (to the same password) kills alice's tokens.
            ctl(etcdctl_bin, ep, "--user=root:rootpw", "user", "passwd", "alice",
                "--interactive=false", stdin="apw\n")
            assert await expired()
            # A watch opened with the dead token: logged in again, created, sees the put.
            stream = alice.watch("app/w")
            nxt = asyncio.ensure_future(stream.__anext__())
            await asyncio.sleep(0)
            while not nxt.done():
                await writer.put("app/w", "x")
                await asyncio.wait([nxt], timeout=0.5)
            batch = nxt.result()
            assert batch.events and batch.events[0].kv.value == b"x"
            await stream.aclose()  # type: ignore[attr-defined]
            second = alice._tokens.token if alice._tokens else None
            assert second and second != first
            # Again, for a unary call: it logs in again, no error reaches the caller.
            ctl(etcdctl_bin, ep, "--user=root:rootpw", "user", "passwd", "alice",
                "--interactive=false", stdin="apw\n")
            assert (await alice.get_one("app/k")).value == b"v1"  # type: ignore[union-attr]
    asyncio.run(body())


def test_credentials_before_auth_is_enabled(store: str, etcdctl_bin: str) -> None:
    """A client (a worker) given credentials while auth is still off works without a
    token, as etcd's clientv3 does, and logs in at the first call after `auth enable`."""
    ep = store

    async def body() -> None:
        async with Client([ep], auth=ClientAuth("alice", "apw")) as alice:
            await alice.put("app/k", "v0")  # auth off: no login, no token
            for args in (["user", "add", "root:rootpw"], ["user", "add", "alice:apw"],
                         ["role", "add", "app"],
                         ["role", "grant-permission", "--prefix=true", "app", "readwrite",
                          "app/"],
                         ["user", "grant-role", "alice", "app"], ["auth", "enable"]):
                ctl(etcdctl_bin, ep, *args)
            await alice.put("app/k", "v1")  # `user name is empty`, then logged in
            assert alice._tokens is not None and alice._tokens.token
            assert (await alice.get_one("app/k")).value == b"v1"  # type: ignore[union-attr]
    asyncio.run(body())
