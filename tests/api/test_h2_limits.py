"""The per-connection limits of coord's HTTP/2 server (coord/rpc/h2/limits.py), on one
in-process connection fed raw frames: the rules that the process tests of
test_h2_attacks.py cannot pin down exactly."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from coord.rpc.h2 import hpack
from coord.rpc.h2.limits import PING_BURST, RESET_BURST
from coord.rpc.h2.server import (
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Connection,
    H2Server,
    frame,
    grpc_message,
)
from tests.api.h2_support import run


class _Handler:
    request_streaming = False
    response_streaming = False
    request_deserializer = None
    response_serializer = None

    async def unary_unary(self, request: bytes, context: Any) -> bytes:
        return b"answer"


class _Transport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def _goaway_codes(out: bytes) -> list[int]:
    codes, pos = [], 0
    while pos + 9 <= len(out):
        length = int.from_bytes(out[pos:pos + 3], "big")
        if out[pos + 3] == GOAWAY:
            codes.append(int.from_bytes(out[pos + 13:pos + 17], "big"))
        pos += 9 + length
    return codes


_BLOCK = b"".join(hpack.encode_literal(k, v) for k, v in (
    (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/s/M"),
    (b"content-type", b"application/grpc")))


async def _connection() -> tuple[Connection, _Transport]:
    conn = Connection(H2Server(lambda details: _Handler(), 1 << 20))
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(PREFACE + frame(SETTINGS, 0, 0))
    return conn, transport


async def _call(conn: Connection, stream_id: int) -> None:
    conn.data_received(frame(HEADERS, END_HEADERS, stream_id, _BLOCK)
                       + frame(DATA, END_STREAM, stream_id, grpc_message(b"q"))
                       + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 100)))
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_ping_flood_gets_enhance_your_calm() -> None:
    async def main() -> list[int]:
        conn, transport = await _connection()
        conn.data_received(frame(PING, 0, 0, b"12345678") * (PING_BURST + 50))
        conn._flush()
        return _goaway_codes(bytes(transport.out))
    assert run(main()) == [ENHANCE_YOUR_CALM]


def test_pings_while_responses_flow_are_allowed() -> None:
    """grpc-go's rule: a PING after this side sent DATA is not counted against the client
    (clients probe bandwidth with PINGs while they receive)."""
    async def main() -> list[int]:
        conn, transport = await _connection()
        for i in range(3 * PING_BURST):
            await _call(conn, 1 + 2 * i)
            conn.data_received(frame(PING, 0, 0, b"12345678"))
        conn._flush()
        return _goaway_codes(bytes(transport.out))
    assert run(main()) == []


def test_rapid_reset_gets_enhance_your_calm_and_cancels_within_the_burst_do_not() -> None:
    async def main() -> tuple[list[int], list[int]]:
        conn, transport = await _connection()
        cancel = struct.pack(">I", 8)
        for i in range(RESET_BURST - 10):  # within the burst
            sid = 1 + 2 * i
            conn.data_received(frame(HEADERS, END_HEADERS, sid, _BLOCK)
                               + frame(RST_STREAM, 0, sid, cancel))
        conn._flush()
        within = _goaway_codes(bytes(transport.out))
        for i in range(RESET_BURST - 10, RESET_BURST + 100):
            sid = 1 + 2 * i
            conn.data_received(frame(HEADERS, END_HEADERS, sid, _BLOCK)
                               + frame(RST_STREAM, 0, sid, cancel))
        conn._flush()
        return within, _goaway_codes(bytes(transport.out))
    within, after = run(main())
    assert within == []
    assert after == [ENHANCE_YOUR_CALM]
