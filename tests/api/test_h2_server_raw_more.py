"""coord's own gRPC server spoken to in raw HTTP/2 bytes, continued from
test_h2_server_raw.py: stopping with output waiting in the transport, handler results,
stream windows, trailers-only answers, oversized header blocks, long details, a 24 MiB
response. Same rules: one bounded event loop per test, 127.0.0.1 port 0, no sleeps.
"""

from __future__ import annotations

import asyncio
import struct
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest

from coord.rpc.h2 import hpack
from coord.rpc.h2.server import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    GOAWAY,
    HEADERS,
    PING,
    RST_STREAM,
    STREAM_WINDOW,
    ServicerContext,
    frame,
    grpc_message,
)
from coord.rpc.status import StatusCode
from tests.api.h2_support import (
    TEST_TIMEOUT,
    WAIT,
    Held,
    pattern,
    run,
    stream_unary,
    unary,
    unary_stream,
    within,
)

if TYPE_CHECKING:
    pass
from tests.api.h2_raw import (
    Frame,
    Response,
    barrier,
    big_windows,
    raw,
    request_block,
)
from tests.api.h2_served import (
    BASIC,
    COUNT,
    ECHO,
    SUM,
    failure,
    serving,
)


def test_stop_ends_a_stream_whose_output_waits_in_the_transport_unavailable() -> None:
    grace = 0.3
    started = asyncio.Event()
    ended = asyncio.Event()
    produced = 0

    async def endless(request: bytes, context: ServicerContext) -> AsyncIterator[bytes]:
        nonlocal produced
        try:
            started.set()
            while True:
                produced += 16_000
                yield b"t" * 16_000
        finally:
            ended.set()

    async def body() -> tuple[int, int, list[list[tuple[bytes, bytes]]], list[Frame]]:
        async with raw({COUNT: unary_stream(endless)}) as (client, s):
            # The windows are wide open: only the transport holds the output back, as the
            # client reads nothing until the server has stopped.
            client.send(big_windows(),
                        frame(HEADERS, END_HEADERS, 1, request_block(COUNT.encode())),
                        frame(DATA, END_STREAM, 1, grpc_message(b"")))
            await within(started.wait())
            await within(s.server.stop(grace), grace + WAIT)
            assert ended.is_set()
            at_stop = produced
            received = 0
            blocks: list[list[tuple[bytes, bytes]]] = []
            while True:  # everything the server wrote, in order
                got = await client.read_frame()
                if got.stream != 1:
                    client.other.append(got)
                    continue
                assert got.kind != RST_STREAM, got
                if got.kind == DATA:
                    received += len(got.payload)
                elif got.kind == HEADERS:
                    blocks.append(client.decoder.decode(got.payload))
                if got.flags & END_STREAM:
                    break
            return at_stop, received, blocks, client.other

    at_stop, received, blocks, other = run(body())
    # The handler never awaits on its own: it gave the loop back only when the transport
    # paused, with what the kernel and the transport buffer hold unread (~4 MB here).
    assert at_stop > 512 << 10
    assert received == at_stop // 16_000 * (16_000 + 5)
    assert len(blocks) == 2
    assert (b":status", b"200") in blocks[0]
    assert (b"grpc-status", b"14") in blocks[1]  # UNAVAILABLE, not CANCELLED (1)
    assert any(f.kind == GOAWAY for f in other)


def test_a_unary_handler_that_returns_none_is_unknown() -> None:
    async def nothing(request: bytes, context: ServicerContext) -> None:
        return None

    async def body() -> tuple[grpc.aio.AioRpcError, bytes]:
        async with serving({**BASIC, "/test.S/Nothing": unary(nothing)}) as s:
            err = await failure(s.unary("/test.S/Nothing")(b"", timeout=WAIT))
            return err, bytes(await within(s.unary(ECHO)(b"after")))

    err, after = run(body())
    assert err.code() == grpc.StatusCode.UNKNOWN
    assert after == b"echo:after"


def test_stop_returns_when_the_last_client_with_an_open_call_disconnects() -> None:
    grace = 5.0
    holder = Held()
    started, ended = holder.started, holder.ended

    async def held(request: bytes, context: ServicerContext) -> bytes:
        await holder.hold()
        return b""

    async def body() -> float:
        async with raw({ECHO: unary(held)}) as (client, s):
            client.send(frame(HEADERS, END_HEADERS, 1, request_block()),
                        frame(DATA, END_STREAM, 1, grpc_message(b"")))
            await within(started.wait())
            begun = time.monotonic()
            stop = asyncio.create_task(s.server.stop(grace))
            await client.until(GOAWAY)  # stop() is in its grace period
            client.close()  # gone without a RST_STREAM
            await within(stop, grace + WAIT)
            elapsed = time.monotonic() - begun
            assert ended.is_set()
            return elapsed

    assert run(body()) < 2.0


def test_data_beyond_the_stream_window_is_a_flow_control_error() -> None:
    held = Held()
    started, cancelled = held.started, held.ended

    async def never_reads(requests: AsyncIterator[bytes], context: ServicerContext) -> bytes:
        await held.hold()
        return b""

    size = 16_384  # one whole message per DATA frame
    message = grpc_message(b"m" * (size - 5))
    # The server gives stream credit back while the handler holds less than a window of
    # unread messages: with a handler that never reads, it grants 1 MiB (initial) + 1 MiB
    # (two WINDOW_UPDATEs) at most. This client ignores them and sends 3 MiB.
    frames = 3 * STREAM_WINDOW // size

    async def body() -> Response:
        async with raw({**BASIC, SUM: stream_unary(never_reads)}) as (client, _):
            client.send(frame(HEADERS, END_HEADERS, 1, request_block(SUM.encode())))
            await within(started.wait())
            client.send(*(frame(DATA, 0, 1, message) for _ in range(frames)))
            seen = await barrier(client)
            resets = [(f.stream, f.payload) for f in seen if f.kind == RST_STREAM]
            assert resets == [(1, struct.pack(">I", FLOW_CONTROL_ERROR))]
            assert not any(f.kind == GOAWAY for f in seen)  # a stream error only
            await within(cancelled.wait())  # the reset call's handler is stopped
            client.send(frame(HEADERS, END_HEADERS, 3, request_block()),
                        frame(DATA, END_STREAM, 3, grpc_message(b"next")))
            return await client.response(3)

    after = run(body())
    assert after.data == grpc_message(b"echo:next")
    assert after.status() == b"0"


def test_an_unknown_method_with_end_stream_gets_trailers_only_and_no_reset() -> None:
    async def body() -> list[Frame]:
        async with raw() as (client, _):
            client.send(frame(HEADERS, END_HEADERS | END_STREAM, 1,
                              request_block(b"/test.S/Nope")))
            return await barrier(client)

    seen = run(body())
    on_stream = [f for f in seen if f.stream == 1]
    assert [(f.kind, f.flags & END_STREAM) for f in on_stream] == [(HEADERS, END_STREAM)]
    block = hpack.Decoder().decode(on_stream[0].payload)
    assert (b":status", b"200") in block
    assert (b"grpc-status", b"12") in block
    assert not any(f.kind == RST_STREAM for f in seen)


def test_a_header_block_over_64_kib_is_enhance_your_calm() -> None:
    block = request_block(extra=[(b"x-big", b"a" * (70 << 10))])
    assert len(block) > 64 << 10
    chunks = [block[i:i + 16_384] for i in range(0, len(block), 16_384)]

    async def body() -> Frame:
        async with raw() as (client, s):
            client.send(frame(HEADERS, 0, 1, chunks[0]),
                        *(frame(CONTINUATION, 0, 1, c) for c in chunks[1:-1]),
                        frame(CONTINUATION, END_HEADERS, 1, chunks[-1]),
                        frame(DATA, END_STREAM, 1, grpc_message(b"")),
                        frame(PING, 0, 0, b"barrier!"))
            while True:  # the old server answered the call and the PING
                got = await client.read_frame()
                assert not (got.kind == PING and got.flags & ACK), "no GOAWAY"
                assert got.stream != 1, got
                if got.kind == GOAWAY:
                    break
            await client.eof()
            assert await within(s.unary(ECHO)(b"ok")) == b"echo:ok"
            return got

    goaway = run(body())
    last_stream, code = struct.unpack_from(">II", goaway.payload)
    assert code == ENHANCE_YOUR_CALM
    assert last_stream == 0


@pytest.mark.parametrize("char", ["é", "€"])
def test_long_non_ascii_details_are_cut_on_a_character_and_fit_one_frame(char: str) -> None:
    details = char * 10_000

    async def fail(request: bytes, context: ServicerContext) -> bytes:
        await context.abort(StatusCode.FAILED_PRECONDITION, details)

    async def peer(request: bytes, context: ServicerContext) -> bytes:
        return context.peer().encode()

    handlers = {ECHO: unary(fail), "/test.S/Peer": unary(peer)}

    async def body() -> tuple[grpc.aio.AioRpcError, bytes, bytes, Frame]:
        async with serving(handlers) as s:
            first = bytes(await within(s.unary("/test.S/Peer")(b"")))
            err = await failure(s.unary(ECHO)(b"", timeout=WAIT))
            second = bytes(await within(s.unary("/test.S/Peer")(b"")))
        async with raw(handlers) as (client, _):
            client.send(frame(HEADERS, END_HEADERS, 1, request_block()),
                        frame(DATA, END_STREAM, 1, grpc_message(b"")))
            trailers = await client.until(HEADERS, END_STREAM)
        return err, first, second, trailers

    err, first, second, trailers = run(body())
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    got = err.details() or ""
    assert got and details.startswith(got)
    assert "\ufffd" not in got
    assert first == second  # the same connection: the trailers did not break it
    assert trailers.stream == 1
    assert len(trailers.payload) <= 16_384
    block = dict(hpack.Decoder().decode(trailers.payload))
    assert block[b"grpc-status"] == b"9"
    raw_message = urllib.parse.unquote_to_bytes(block[b"grpc-message"])
    assert details.startswith(raw_message.decode("utf-8"))  # strict: whole characters


def test_a_24_mib_unary_response_arrives_intact() -> None:
    size = 24 << 20
    expected = pattern(size, seed=24)

    async def large(request: bytes, context: ServicerContext) -> bytes:
        return expected

    async def body() -> bytes:
        # CLIENT_OPTIONS lets the channel receive up to 64 MiB.
        async with serving({ECHO: unary(large)}) as s:
            return bytes(await within(s.unary(ECHO)(b""), TEST_TIMEOUT))

    got = run(body())
    assert len(got) == size
    assert got == expected
