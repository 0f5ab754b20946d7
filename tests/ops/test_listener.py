"""The ops listener and the series helpers, in-process: routes, methods, etcd's names."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from coord.ops.grpc_metrics import HandledCounts, code_name, instrument
from coord.ops.health import routes
from coord.ops.http import OpsServer
from coord.rpc.handlers import CallContext, RpcAbort, method_handler
from coord.rpc.status import StatusCode

GO_CODES = ["OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
            "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
            "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
            "Unauthenticated"]
"""grpc-go's codes.Code.String(), in code order."""


def test_code_names_are_gos() -> None:
    assert [code_name(c) for c in sorted(StatusCode, key=lambda c: c.value)] == GO_CODES


async def _request(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


def test_routes_methods_and_counts() -> None:
    async def main() -> None:
        registry = CollectorRegistry()
        counts = HandledCounts(registry)

        async def put(request: object, context: object) -> object:
            if request == "bad":
                raise RpcAbort(StatusCode.INVALID_ARGUMENT, "no")
            return "ok"

        table = instrument({"/etcdserverpb.KV/Put": method_handler(put, False, False)},
                           counts)
        handler = table["/etcdserverpb.KV/Put"].unary_unary
        assert handler is not None
        await handler("good", CallContext("p", None))
        with pytest.raises(RpcAbort):
            await handler("bad", CallContext("p", None))

        async def no_leader() -> str | None:
            return "RAFT NO LEADER"

        server = OpsServer("127.0.0.1:0", routes(registry, [no_leader], []))
        await server.start()
        port = int(server.address.rsplit(":", 1)[1])
        try:
            health = await _request(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert health.startswith(b"HTTP/1.1 503 ")
            assert health.endswith(b'{"health":"false","reason":"RAFT NO LEADER"}')
            head = await _request(port, b"HEAD /livez HTTP/1.1\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
            assert (await _request(port, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(
                b"HTTP/1.1 405 ")
            assert (await _request(port, b"GET /debug HTTP/1.1\r\n\r\n")).startswith(
                b"HTTP/1.1 404 ")
            metrics = await _request(port, b"GET /metrics?x=1 HTTP/1.1\r\n\r\n")
            body = metrics.split(b"\r\n\r\n", 1)[1].decode()
            samples = {(s.labels["grpc_code"]): s.value
                       for f in text_string_to_metric_families(body) for s in f.samples
                       if s.name == "grpc_server_handled_total"}
            assert samples["OK"] == 1 and samples["InvalidArgument"] == 1
            assert len(samples) == len(GO_CODES) and sum(samples.values()) == 2
        finally:
            await server.stop()

    asyncio.run(main())
