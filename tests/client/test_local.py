"""coord.rpc.local: an agent's worker calls its own member without a socket, and must see
exactly what a client over the network sees — results, etcd's errors, watch and lease
streams, deadlines, the size limit.

The differential tests run one in-process member and two clients on it, one in-process and
one over its client port, and compare what each gets back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from coord.client import Client, ClientError, Compare, put
from coord.rpc.handlers import RpcAbort
from coord.rpc.local import LocalTarget
from coord.rpc.status import StatusCode
from coord.server.server import CoordServer
from tests.helpers.member import member_config

Body = Callable[[Client, Client, CoordServer], Awaitable[None]]


def _run(tmp_path: Path, body: Body) -> None:
    async def main() -> None:
        config = member_config(tmp_path / "n1")
        server = CoordServer(config)
        await server.start()
        try:
            addr = config.listen_client
            async with (Client([addr], channels=server.channels()) as local,
                        Client([addr]) as net):
                async with asyncio.timeout(30):
                    await body(local, net, server)
        finally:
            if not server.local_target().closing:  # the body may have stopped it
                await server.stop()

    asyncio.run(main())


async def _outcome(fn: Callable[[], Awaitable[Any]]) -> tuple[str, str]:
    try:
        await fn()
    except ClientError as err:
        return type(err).__name__, str(err)
    return "ok", ""


def test_results_and_errors_are_those_of_the_network(tmp_path: Path) -> None:
    async def body(local: Client, net: Client, server: CoordServer) -> None:
        await local.put("/l/a", "1")
        r = await local.put("/l/a", "2", prev_kv=True)
        assert r.prev_kv is not None and r.prev_kv.value == b"1"
        got_local = await local.get("/l/", prefix=True)
        got_net = await net.get("/l/", prefix=True)
        assert got_local == got_net and got_local.kvs[0].version == 2
        t = await local.txn([Compare.create("/l/lock") == 0],
                            [put("/l/lock", "me")])
        assert t.succeeded
        t = await net.txn([Compare.create("/l/lock") == 0], [put("/l/lock", "you")])
        assert not t.succeeded
        rev = (await local.put("/l/b", "x")).revision
        await local.compact(rev - 1)
        big = "v" * (2 * 1024 * 1024)  # over etcd's request limit
        cases: list[Callable[[Client], Awaitable[Any]]] = [
            lambda c: c.get("/l/a", revision=rev - 2),  # compacted
            lambda c: c.get("/l/a", revision=rev + 100),  # future revision
            lambda c: c.put("", "x"),  # empty key
            lambda c: c.put("/l/big", big),  # too large
            lambda c: c.txn([], [put("/l/d", "1"), put("/l/d", "2")]),  # duplicate key
            lambda c: c.txn([], [put(f"/l/m{i}", "1") for i in range(129)]),  # too many ops
            lambda c: c.put("/l/x", "1", lease=0x1234),  # no such lease
            lambda c: c.revoke(0x1234),
            lambda c: c.keepalive_once(0x1234),
            lambda c: c.compact(rev - 5),  # already compacted
        ]
        for case in cases:
            want = await _outcome(lambda case=case: case(net))  # type: ignore[misc]
            got = await _outcome(lambda case=case: case(local))  # type: ignore[misc]
            assert want[0] != "ok"
            assert got == want

    _run(tmp_path, body)


def test_watch_and_lease_streams(tmp_path: Path) -> None:
    async def body(local: Client, net: Client, server: CoordServer) -> None:
        grant = await local.grant(30)
        assert await local.keepalive_once(grant.id) == 30
        ka = local.keep_alive(grant.id, 30)
        await local.put("/w/k", "0", lease=grant.id)
        start = (await local.put("/w/k", "1")).revision

        async def collect(c: Client, n: int) -> list[tuple[bytes, bytes, int]]:
            out: list[tuple[bytes, bytes, int]] = []
            stream: AsyncIterator[Any] = c.watch("/w/", prefix=True, start_revision=start)
            async for batch in stream:
                out += [(e.kv.key, e.kv.value, e.type) for e in batch.events]
                if len(out) >= n:
                    break
            return out

        watchers = [asyncio.ensure_future(collect(c, 4)) for c in (local, net)]
        await local.put("/w/k", "2")
        await net.delete("/w/k")
        await local.put("/w/j", "3")
        a, b = await asyncio.gather(*watchers)
        assert a == b and [v for _, v, _ in a] == [b"1", b"2", b"", b"3"]
        ttl = await local.time_to_live(grant.id, keys=True)
        assert ttl.ttl > 0
        await ka.stop()
        await local.revoke(grant.id)
        assert (await local.time_to_live(grant.id)).ttl == -1
        rev = (await local.put("/w/z", "z")).revision
        await local.compact(rev)
        with pytest.raises(ClientError, match="compacted"):
            async for _ in local.watch("/w/", prefix=True, start_revision=rev - 2):
                break

    _run(tmp_path, body)


# -- the channel itself, against handlers made for the occasion ---------------------------


def _target(handlers: dict[str, Any], max_receive: int = 1 << 20) -> LocalTarget:
    return LocalTarget(lambda call: handlers.get(call.method), max_receive)


def _ident(b: bytes) -> bytes:
    return b


def _unary(fn: Callable[[bytes, Any], Awaitable[bytes]]) -> Any:
    return grpc.unary_unary_rpc_method_handler(fn, request_deserializer=_ident,
                                               response_serializer=_ident)


def test_unary_deadline_abort_handler_bug_size_limit_and_unknown_method() -> None:
    async def slow(req: bytes, ctx: Any) -> bytes:
        await asyncio.sleep(10)
        return req

    async def refuse(req: bytes, ctx: Any) -> bytes:
        await ctx.abort(StatusCode.FAILED_PRECONDITION, "etcdserver: no")
        raise AssertionError("abort returned")

    async def buggy(req: bytes, ctx: Any) -> bytes:
        raise ValueError("oops")

    async def echo(req: bytes, ctx: Any) -> bytes:
        assert ctx.invocation_metadata() == (("hasleader", "true"),)
        return req[::-1]

    async def main() -> None:
        ch = _target({"/s/slow": _unary(slow), "/s/refuse": _unary(refuse),
                      "/s/buggy": _unary(buggy), "/s/echo": _unary(echo)}, 8).channel()

        def call(m: str) -> Any:
            return ch.unary_unary(m, request_serializer=_ident, response_deserializer=_ident)

        assert await call("/s/echo")(b"abc", metadata=(("hasleader", "true"),)) == b"cba"
        cases = [("/s/slow", b"x", grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"),
                 ("/s/refuse", b"x", grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: no"),
                 ("/s/buggy", b"x", grpc.StatusCode.UNKNOWN, "oops"),
                 ("/s/echo", b"123456789", grpc.StatusCode.RESOURCE_EXHAUSTED,
                  "grpc: received message larger than max (9 vs. 8)"),
                 ("/s/none", b"x", grpc.StatusCode.UNIMPLEMENTED, "Method not found!")]
        for method, req, code, details in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(method)(req, timeout=0.2)
            assert err.value.code() == code and details in (err.value.details() or "")

    asyncio.run(main())


def test_stream_read_write_eof_abort_and_cancel() -> None:
    cancelled = asyncio.Event

    async def main() -> None:
        gone = cancelled()

        async def echo(requests: AsyncIterator[bytes], ctx: Any) -> AsyncIterator[bytes]:
            async for r in requests:
                if r == b"stop":
                    raise RpcAbort(StatusCode.ABORTED, "told to stop")
                yield r.upper()

        async def forever(requests: AsyncIterator[bytes], ctx: Any) -> AsyncIterator[bytes]:
            try:
                yield b"first"
                await asyncio.sleep(100)
            finally:
                gone.set()

        kw = {"request_deserializer": _ident, "response_serializer": _ident}
        ch = _target({"/s/echo": grpc.stream_stream_rpc_method_handler(echo, **kw),
                      "/s/forever": grpc.stream_stream_rpc_method_handler(forever, **kw)}
                     ).channel()

        def open_(m: str) -> Any:
            return ch.stream_stream(m, request_serializer=_ident,
                                    response_deserializer=_ident)()

        s = open_("/s/echo")
        await s.write(b"a")
        await s.write(b"b")
        assert [await s.read(), await s.read()] == [b"A", b"B"]
        await s.done_writing()
        assert await s.read() is grpc.aio.EOF  # type: ignore[attr-defined]
        assert await s.read() is grpc.aio.EOF  # type: ignore[attr-defined]

        s = open_("/s/echo")
        await s.write(b"stop")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.read()
        assert err.value.code() == grpc.StatusCode.ABORTED
        assert err.value.details() == "told to stop"

        s = open_("/s/forever")
        assert await s.read() == b"first"
        s.cancel()
        await asyncio.wait_for(gone.wait(), 5)  # the handler was cancelled too
        with pytest.raises(asyncio.CancelledError):
            await s.read()
        assert not ch._streams

        s = open_("/s/forever")
        assert await s.read() == b"first"
        await ch.close()  # closing the channel ends its streams
        assert s.done()

    asyncio.run(main())


def test_channel_close_grace_server_stop_and_call_edges(tmp_path: Path) -> None:
    async def none(req: bytes, ctx: Any) -> Any:
        return None

    async def times_out_itself(req: bytes, ctx: Any) -> bytes:
        raise TimeoutError("the handler's own timeout")

    async def echo(requests: AsyncIterator[bytes], ctx: Any) -> AsyncIterator[bytes]:
        async for r in requests:
            yield r

    async def main() -> None:
        kw = {"request_deserializer": _ident, "response_serializer": _ident}
        target = _target({"/s/none": _unary(none), "/s/timeout": _unary(times_out_itself),
                          "/s/echo": grpc.stream_stream_rpc_method_handler(echo, **kw)}, 8)
        ch = target.channel()

        def unary(m: str) -> Any:
            return ch.unary_unary(m, request_serializer=_ident, response_deserializer=_ident)

        def stream(c: Any = ch) -> Any:
            return c.stream_stream("/s/echo", request_serializer=_ident,
                                   response_deserializer=_ident)()

        for method, code, details in [
            ("/s/none", grpc.StatusCode.UNKNOWN, "the method handler returned no response"),
            ("/s/timeout", grpc.StatusCode.UNKNOWN, "the handler's own timeout"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await unary(method)(b"x", timeout=5)
            assert err.value.code() == code and details in (err.value.details() or "")

        s = stream()
        await s.write(b"ok")
        assert await s.read() == b"ok"
        await s.done_writing()
        with pytest.raises(asyncio.InvalidStateError):
            await s.write(b"late")
        assert await s.read() is grpc.aio.EOF  # type: ignore[attr-defined]
        assert s.cancel() is False  # already ended: unchanged
        assert await s.read() is grpc.aio.EOF  # type: ignore[attr-defined]

        s = stream()
        await s.write(b"123456789")  # over the size limit: the call ends
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await s.read()
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        # close(grace): new calls are refused at once, open streams live out the grace
        s = stream()
        await ch.close(grace=0.3)
        await s.write(b"still")
        assert await s.read() == b"still"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await unary("/s/none")(b"x")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(s.read(), 5)

        # the member stopping ends every open stream with UNAVAILABLE, as h2 does
        ch2 = target.channel()
        s = stream(ch2)
        target.close()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(s.read(), 5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert err.value.details() == "server shutting down"
        assert not target._streams

    asyncio.run(main())


def test_a_stopping_member_ends_its_local_streams(tmp_path: Path) -> None:
    async def body(local: Client, net: Client, server: CoordServer) -> None:
        ch = server.local_target().channel()
        watch = ch.stream_stream("/etcdserverpb.Watch/Watch",
                                 request_serializer=lambda m: m.SerializeToString(),
                                 response_deserializer=lambda b: b)()
        from coord.pb import rpc_pb2
        await watch.write(rpc_pb2.WatchRequest(
            create_request=rpc_pb2.WatchCreateRequest(key=b"/stop/")))
        assert await watch.read()  # created
        await server.stop()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(watch.read(), 5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(ClientError) as refused:
            await local.put("/stop/k", "v")
        assert "in-process member is stopping" in str(refused.value)

    _run(tmp_path, body)
