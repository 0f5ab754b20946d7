"""CPU per unary call through coord's RPC runtime alone, in-process: no socket, no client.

``h2``: one server :class:`~coord.rpc.h2.connection.Connection` fed HEADERS + DATA +
WINDOW_UPDATE per call (a constant handler, a fake transport), the path of every network
call up to the handler and back. ``local``: a :class:`~coord.rpc.local.LocalChannel`
unary call with a deadline (an agent's worker calling its own member). Prints the
``process_time`` per call in µs, the best of ``--repeat`` rounds of ``--calls`` calls.

To compare two trees, run it from each (the same venv):
``cd DIR && python -m bench.call_cpu`` — alternately, several times: differences below
about 0.5 µs are within the spread of identical runs on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys
import time
from typing import Any

from coord.rpc.h2 import hpack
from coord.rpc.h2.server import (
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PREFACE,
    SETTINGS,
    WINDOW_UPDATE,
    Connection,
    H2Server,
    frame,
    grpc_message,
)
from coord.rpc.local import LocalTarget


class _Handler:
    request_streaming = False
    response_streaming = False
    request_deserializer = None
    response_serializer = None
    unary_stream = stream_unary = stream_stream = None

    async def unary_unary(self, request: bytes, context: Any) -> bytes:
        return b"answer"


class _Transport:
    def __init__(self) -> None:
        self.written = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


_BLOCK = b"".join(hpack.encode_literal(k, v) for k, v in (
    (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/s/M"),
    (b"content-type", b"application/grpc")))
_HANDLER = _Handler()


async def h2_calls(n: int) -> float:
    conn = Connection(H2Server(lambda details: _HANDLER, 1 << 20))
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(PREFACE + frame(SETTINGS, 0, 0))
    message = grpc_message(b"q")
    credit = frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 100))
    stream_id = 1
    t0 = time.process_time()
    for _ in range(n):
        conn.data_received(frame(HEADERS, END_HEADERS, stream_id, _BLOCK)
                           + frame(DATA, END_STREAM, stream_id, message) + credit)
        stream_id += 2
        for _ in range(3):  # the call's task runs, answers, and the output is flushed
            await asyncio.sleep(0)
    per_call = (time.process_time() - t0) / n
    if conn.streams or transport.written < n * 40:
        raise SystemExit("h2: not every call was answered")
    return per_call * 1e6


async def local_calls(n: int) -> float:
    channel = LocalTarget(lambda details: _HANDLER, 1 << 20).channel()
    call = channel.unary_unary("/s/M", request_serializer=bytes, response_deserializer=bytes)
    t0 = time.process_time()
    for _ in range(n):
        if await call(b"q", timeout=5.0) != b"answer":
            raise SystemExit("local: wrong answer")
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", choices=("h2", "local"), default=None)
    args = ap.parse_args()
    for name, fn in (("h2", h2_calls), ("local", local_calls)):
        if args.only in (None, name):
            best = min(asyncio.run(fn(args.calls)) for _ in range(args.repeat))
            sys.stdout.write(f"{name:5} {best:6.2f} µs per call (best of {args.repeat})\n")


if __name__ == "__main__":
    main()
