"""CPU per call of coord's own HTTP/2 client (:mod:`coord.rpc.h2.client`), the peer
transport's path: what ``bench.call_cpu`` is for the server.

``write``: one :class:`~coord.rpc.h2.client.StreamCall` on a fake transport (no socket),
a 200-byte message written per loop turn and flushed, the server's connection and stream
credit fed back every 64 KiB — the client's cost of one Raft ``MessageBatch`` alone.
``unary``: :func:`~coord.rpc.h2.client.unary_call` to an in-process
:class:`~coord.rpc.h2.server.H2Server` over loopback (``--tls``: over TLS, a throwaway CA
from ``tests/tls/certs.py``) — connection, handshake, call and close, client and server
together in this process.

Prints ``process_time`` per operation in µs, the best of ``--repeat`` rounds. To compare two
trees, run it from each with the same venv, alternately, several times (``cd DIR && python -m
bench.client_cpu``); the machine is shared, so look at the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from ssl import SSLContext
from typing import Any

import structlog

from bench.call_cpu import _HANDLER
from bench.call_cpu import _Transport as CountingTransport
from coord.rpc.h2.client import StreamCall, unary_call
from coord.rpc.h2.server import (
    SETTINGS,
    WINDOW_UPDATE,
    H2Server,
    frame,
)
from coord.rpc.h2.tls import ServerTLS, client_context, server_tls
from tests.tls.certs import make_ca

MESSAGE = b"m" * 200
CREDIT_EVERY = 64 << 10


class _Transport(CountingTransport):
    def get_write_buffer_size(self) -> int:
        return 0


async def write_calls(n: int) -> float:
    loop = asyncio.get_running_loop()
    call = StreamCall(loop, "127.0.0.1:1", "/s/Send")
    transport = _Transport()
    call.connection_made(transport)  # type: ignore[arg-type]
    call.data_received(frame(SETTINGS, 0, 0))
    credit = struct.pack(">I", CREDIT_EVERY)
    given = 0
    t0 = time.process_time()
    for _ in range(n):
        call.write(MESSAGE)
        await call.drain()
        given += len(MESSAGE) + 5
        if given >= CREDIT_EVERY // 2:
            call.data_received(frame(WINDOW_UPDATE, 0, 0, credit)
                               + frame(WINDOW_UPDATE, 0, 1, credit))
            given -= CREDIT_EVERY
        await asyncio.sleep(0)  # the loop turn ends: the output is flushed
    per_call = (time.process_time() - t0) / n
    if call.closed or transport.written < n * len(MESSAGE):
        raise SystemExit("write: not every message was sent")
    call.close()
    return per_call * 1e6


async def unary_calls(n: int, tls: tuple[ServerTLS | None, SSLContext] | None) -> float:
    server = H2Server(lambda details: _HANDLER, 1 << 20, tls[0] if tls else None)
    port = await server.start("127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    try:
        t0 = time.process_time()
        for _ in range(n):
            answer = await unary_call(address, "/s/M", b"q", timeout=5.0,
                                      ssl=tls[1] if tls else None)
            if answer != b"answer":
                raise SystemExit("unary: wrong answer")
        return (time.process_time() - t0) / n * 1e6
    finally:
        await server.stop(0)


def _tls(directory: Path) -> tuple[ServerTLS | None, SSLContext]:
    ca = make_ca(directory)
    pair = ca.issue(directory, "server")
    return (server_tls("--", pair.cert, pair.key, None, False, "TLS1.2"),
            client_context(cacert=ca.cert))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=0,
                    help="per round (default: 50,000 writes, 500 unary calls)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", choices=("write", "unary"), default=None)
    ap.add_argument("--tls", action="store_true", help="unary calls over TLS")
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    with tempfile.TemporaryDirectory() as tmp:
        tls = _tls(Path(tmp)) if args.tls else None
        runs: list[tuple[str, Callable[[], Coroutine[Any, Any, float]]]] = [
            ("write", lambda: write_calls(args.calls or 50_000)),
            ("unary" + ("-tls" if tls else ""), lambda: unary_calls(args.calls or 500, tls))]
        for name, fn in runs:
            if args.only in (None, name.split("-")[0]):
                results = sorted(asyncio.run(fn()) for _ in range(args.repeat))
                sys.stdout.write(f"{name:9} {results[0]:8.2f} µs per op (best of "
                                 f"{args.repeat}; median {results[len(results) // 2]:.2f})\n")


if __name__ == "__main__":
    main()
