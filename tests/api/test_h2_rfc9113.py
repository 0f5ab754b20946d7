"""RFC 9113 as coord's HTTP/2 server applies it, in raw frames: a malformed request is a
stream error PROTOCOL_ERROR and the connection goes on (section 8.1.1: pseudo-headers,
field names, connection-specific fields, ``te``); gRPC's own rules (POST, HTTP 415 for
another ``content-type``); the client's SETTINGS first (3.4); frames on idle, half-closed
and closed streams answered as the state machine of 5.1 says (coord/rpc/h2/streams.py).

Every test runs its own bounded event loop and server on 127.0.0.1 port 0; a "nothing
else happens" check is a PING barrier: the server handles frames in order.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pytest

from coord.rpc.h2 import hpack
from coord.rpc.h2.server import (
    ACK,
    DATA,
    END_HEADERS,
    END_STREAM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    PRIORITY,
    PROTOCOL_ERROR,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    frame,
    grpc_message,
)
from coord.rpc.h2.streams import RECEIVE, Closed, State, Verdict, received
from tests.api.h2_raw import Frame, RawClient, barrier, raw, request_block
from tests.api.h2_served import BASIC, ECHO
from tests.api.h2_support import Held, run, unary

if TYPE_CHECKING:
    from tests.api.h2_support import Handler

HOLD = "/test.S/Hold"


def _fields(fields: Iterable[tuple[bytes, bytes]]) -> bytes:
    return b"".join(hpack.encode_literal(n, v) for n, v in fields)


GOOD = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", ECHO.encode()),
        (b":authority", b"x"), (b"content-type", b"application/grpc"),
        (b"te", b"trailers")]


def _without(name: bytes) -> list[tuple[bytes, bytes]]:
    return [f for f in GOOD if f[0] != name]


MALFORMED = {
    "upper-case-name": [*GOOD, (b"X-Upper", b"1")],
    "duplicate-path": [*GOOD[:3], (b":path", b"/a"), *GOOD[3:]],
    "pseudo-after-regular": [*_without(b":authority"), (b":authority", b"x")],
    "unknown-pseudo": [(b":foo", b"bar"), *GOOD],
    "response-pseudo": [(b":status", b"200"), *GOOD],
    "no-method": _without(b":method"),
    "no-scheme": _without(b":scheme"),
    "no-path": _without(b":path"),
    "empty-path": [*_without(b":path")[:2], (b":path", b""), *_without(b":path")[2:]],
    "connection-field": [*GOOD, (b"connection", b"keep-alive")],
    "transfer-encoding": [*GOOD, (b"transfer-encoding", b"chunked")],
    "upgrade": [*GOOD, (b"upgrade", b"h2c")],
    "te-gzip": [*_without(b"te"), (b"te", b"gzip")],
    "newline-in-value": [*GOOD, (b"x-a", b"1\r\nx-b: 2")],
    "space-around-value": [*GOOD, (b"x-a", b" 1")],
    "space-in-name": [*GOOD, (b"x a", b"1")],
}


async def _answers(client: RawClient, stream_id: int) -> None:
    """A well-formed call on ``stream_id`` is served on this connection."""
    client.send(frame(HEADERS, END_HEADERS, stream_id, request_block()),
                frame(DATA, END_STREAM, stream_id, grpc_message(b"ok")))
    response = await client.response(stream_id)
    assert response.reset is None
    assert response.data == grpc_message(b"echo:ok")


async def _goaway(client: RawClient) -> tuple[int, bytes]:
    """The GOAWAY that ends the connection: its error code and debug data; then EOF."""
    got = await client.until(GOAWAY)
    await client.eof()
    return struct.unpack(">I", got.payload[4:8])[0], got.payload[8:]


def _rst(frames: list[Frame], stream_id: int) -> list[int]:
    return [struct.unpack(">I", f.payload)[0] for f in frames
            if f.kind == RST_STREAM and f.stream == stream_id]


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_request_is_a_stream_protocol_error_and_the_connection_goes_on(
        case: str) -> None:
    async def body() -> None:
        async with raw() as (client, s):
            client.send(frame(HEADERS, END_HEADERS, 1, _fields(MALFORMED[case])),
                        frame(DATA, END_STREAM, 1, grpc_message(b"x")))
            response = await client.response(1)
            assert response.reset == PROTOCOL_ERROR
            assert response.headers == []
            assert s.seen == []  # no handler was even looked up
            await _answers(client, 3)

    run(body())


def test_trailers_with_a_pseudo_header_are_a_stream_protocol_error() -> None:
    async def body() -> None:
        async with raw() as (client, _):
            client.send(frame(HEADERS, END_HEADERS, 1, request_block()),
                        frame(DATA, 0, 1, grpc_message(b"x")),
                        frame(HEADERS, END_HEADERS | END_STREAM, 1,
                              _fields([(b":path", b"/late")])))
            assert (await client.response(1)).reset == PROTOCOL_ERROR
            await _answers(client, 3)

    run(body())


def test_a_get_is_reset_protocol_error_as_grpc_go_does() -> None:
    async def body() -> None:
        async with raw() as (client, _):
            fields = [(b":method", b"GET"), *_without(b":method")]
            client.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, _fields(fields)))
            assert (await client.response(1)).reset == PROTOCOL_ERROR
            await _answers(client, 3)

    run(body())


@pytest.mark.parametrize("content_type", [None, b"text/plain", b"application/grpcx"])
def test_a_request_that_is_not_grpc_gets_http_415(content_type: bytes | None) -> None:
    async def body() -> None:
        async with raw() as (client, s):
            fields = _without(b"content-type")
            if content_type is not None:
                fields.append((b"content-type", content_type))
            client.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, _fields(fields)))
            response = await client.response(1)
            assert response.reset is None
            assert len(response.headers) == 1  # trailers-only
            head = dict(response.headers[0])
            assert head[b":status"] == b"415"
            assert head[b"grpc-status"] == b"13"
            assert b"content-type" in head[b"grpc-message"]
            assert s.seen == []
            await _answers(client, 3)

    run(body())


@pytest.mark.parametrize("suffix", [b"", b"+proto", b";charset=utf-8"])
def test_grpc_content_types_with_a_codec_or_parameters_are_served(suffix: bytes) -> None:
    async def body() -> None:
        async with raw() as (client, _):
            fields = [*_without(b"content-type"), (b"content-type", b"application/grpc" + suffix)]
            client.send(frame(HEADERS, END_HEADERS, 1, _fields(fields)),
                        frame(DATA, END_STREAM, 1, grpc_message(b"ok")))
            assert (await client.response(1)).data == grpc_message(b"echo:ok")

    run(body())


@pytest.mark.parametrize("first", ["ping", "settings-ack", "headers", "window-update"])
def test_the_first_frame_after_the_preface_must_be_settings(first: str) -> None:
    opening = {"ping": frame(PING, 0, 0, b"12345678"),
               "settings-ack": frame(SETTINGS, ACK, 0),
               "headers": frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block()),
               "window-update": frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1000))}[first]

    async def body() -> tuple[int, bytes]:
        async with raw(preface=False) as (client, s):
            client.send(PREFACE + opening + frame(SETTINGS, 0, 0))
            code = await _goaway(client)
            assert s.seen == []
            return code

    code, debug = run(body())
    assert code == PROTOCOL_ERROR
    assert b"SETTINGS" in debug


@pytest.mark.parametrize("kind", ["rst-stream", "window-update", "data"])
def test_a_frame_on_an_idle_stream_is_a_connection_protocol_error(kind: str) -> None:
    sent = {"rst-stream": frame(RST_STREAM, 0, 5, struct.pack(">I", 8)),
            "window-update": frame(WINDOW_UPDATE, 0, 5, struct.pack(">I", 100)),
            "data": frame(DATA, 0, 5, grpc_message(b"x"))}[kind]

    async def body() -> int:
        async with raw() as (client, _):
            await _answers(client, 3)
            client.send(sent)
            return (await _goaway(client))[0]

    assert run(body()) == PROTOCOL_ERROR


def test_headers_on_a_skipped_stream_id_is_a_connection_protocol_error() -> None:
    async def body() -> int:
        async with raw() as (client, _):
            await _answers(client, 5)  # stream 1 and 3 are closed now (RFC 9113 5.1.1)
            client.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, request_block()))
            return (await _goaway(client))[0]

    assert run(body()) == PROTOCOL_ERROR


def _holding(held: Held) -> dict[str, Handler]:
    async def hold(request: bytes, context: object) -> bytes:
        await held.hold()
        return b""
    return {**BASIC, HOLD: unary(hold)}


@pytest.mark.parametrize("late", ["data", "headers"])
def test_data_or_headers_on_a_half_closed_remote_stream_is_stream_closed(late: str) -> None:
    held = Held()

    async def body() -> None:
        async with raw(_holding(held)) as (client, _):
            client.send(frame(HEADERS, END_HEADERS, 1, request_block(HOLD.encode())),
                        frame(DATA, END_STREAM, 1, grpc_message(b"x")))
            await held.started.wait()
            client.send(frame(DATA, 0, 1, grpc_message(b"more")) if late == "data" else
                        frame(HEADERS, END_HEADERS | END_STREAM, 1, _fields([(b"x-t", b"1")])))
            assert (await client.response(1)).reset == STREAM_CLOSED
            await held.ended.wait()  # the handler was cancelled
            await _answers(client, 3)

    run(body())


def test_data_after_a_stream_ended_both_ways_is_a_connection_stream_closed() -> None:
    async def body() -> int:
        async with raw() as (client, _):
            await _answers(client, 1)
            client.send(frame(DATA, 0, 1, grpc_message(b"late")))
            return (await _goaway(client))[0]

    assert run(body()) == STREAM_CLOSED


def test_credit_and_resets_after_a_stream_ended_are_ignored() -> None:
    async def body() -> None:
        async with raw() as (client, _):
            await _answers(client, 1)
            client.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 100)),
                        frame(RST_STREAM, 0, 1, struct.pack(">I", 0)),
                        frame(PRIORITY, 0, 1, struct.pack(">IB", 0, 15)))
            assert await barrier(client) == []
            await _answers(client, 3)

    run(body())


def test_frames_in_flight_after_the_server_reset_a_stream_are_ignored() -> None:
    async def body() -> None:
        async with raw() as (client, _):
            fields = [(b":method", b"GET"), *_without(b":method")]  # reset PROTOCOL_ERROR
            client.send(frame(HEADERS, END_HEADERS, 1, _fields(fields)))
            assert (await client.response(1)).reset == PROTOCOL_ERROR
            client.send(frame(DATA, 0, 1, grpc_message(b"in flight")),
                        frame(HEADERS, END_HEADERS | END_STREAM, 1, _fields([(b"x-t", b"1")])),
                        frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 100)))
            assert await barrier(client) == []
            await _answers(client, 3)

    run(body())


def test_data_after_the_client_reset_a_stream_is_a_stream_closed_error() -> None:
    held = Held()

    async def body() -> None:
        async with raw(_holding(held)) as (client, _):
            client.send(frame(HEADERS, END_HEADERS, 1, request_block(HOLD.encode())),
                        frame(DATA, END_STREAM, 1, grpc_message(b"x")))
            await held.started.wait()
            client.send(frame(RST_STREAM, 0, 1, struct.pack(">I", 8)),
                        frame(DATA, 0, 1, grpc_message(b"after my reset")))
            frames = await barrier(client)
            assert _rst(frames, 1) == [STREAM_CLOSED]
            await _answers(client, 3)

    run(body())


def test_settings_that_push_a_stream_window_past_the_maximum_is_a_flow_control_error() -> None:
    """RFC 9113 6.9.2: a new SETTINGS_INITIAL_WINDOW_SIZE that takes any stream's window
    over 2^31-1 is a connection error FLOW_CONTROL_ERROR."""
    held = Held()

    async def body() -> int:
        async with raw(_holding(held)) as (client, _):
            client.send(frame(HEADERS, END_HEADERS, 1, request_block(HOLD.encode())),
                        frame(DATA, END_STREAM, 1, grpc_message(b"x")))
            await held.started.wait()
            # Stream 1's send window: 65,535 (the default) + this = 2^31-1, the maximum.
            client.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 2**31 - 1 - 65_535)))
            seen = await barrier(client)  # the maximum itself is allowed
            assert not [f for f in seen if f.kind in (GOAWAY, RST_STREAM)], seen
            client.send(frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65_536)))  # +1
            return (await _goaway(client))[0]

    assert run(body()) == FLOW_CONTROL_ERROR


def test_priority_frames_are_checked_and_otherwise_ignored() -> None:
    async def body() -> tuple[int, bytes]:
        async with raw() as (client, _):
            await barrier(client)  # the server's SETTINGS, WINDOW_UPDATE and ACK
            # PRIORITY on an idle stream is allowed and does not open it (RFC 9113 5.1).
            client.send(frame(PRIORITY, 0, 7, struct.pack(">IB", 0, 15)))
            assert await barrier(client) == []
            await _answers(client, 1)
            await _answers(client, 7)
            # the wrong length on an existing stream: a stream FRAME_SIZE_ERROR
            client.send(frame(HEADERS, END_HEADERS, 9, request_block()),
                        frame(PRIORITY, 0, 9, b"\x00\x00\x00"))
            assert (await client.response(9)).reset == FRAME_SIZE_ERROR
            client.send(frame(PRIORITY, 0, 0, struct.pack(">IB", 0, 15)))
            return await _goaway(client)

    code, _ = run(body())
    assert code == PROTOCOL_ERROR


def test_the_state_table_is_the_rfcs() -> None:
    """Spot checks of coord/rpc/h2/streams.py against RFC 9113 5.1, one per rule."""
    assert received(State.IDLE, HEADERS) == (Verdict.ACCEPT, 0)
    assert received(State.IDLE, PRIORITY) == (Verdict.ACCEPT, 0)
    for kind in (DATA, RST_STREAM, WINDOW_UPDATE):
        assert received(State.IDLE, kind) == (Verdict.CONNECTION_ERROR, PROTOCOL_ERROR)
    assert received(State.HALF_CLOSED_REMOTE, DATA) == (Verdict.STREAM_ERROR, STREAM_CLOSED)
    assert received(State.HALF_CLOSED_REMOTE, WINDOW_UPDATE) == (Verdict.ACCEPT, 0)
    assert received(State.RESERVED_LOCAL, DATA) == (Verdict.CONNECTION_ERROR, PROTOCOL_ERROR)
    assert received(State.RESERVED_REMOTE, HEADERS) == (Verdict.ACCEPT, 0)
    assert received(State.CLOSED, DATA, Closed.ENDED) == (Verdict.CONNECTION_ERROR,
                                                          STREAM_CLOSED)
    assert received(State.CLOSED, DATA, Closed.RESET_SENT) == (Verdict.IGNORE, 0)
    assert received(State.CLOSED, WINDOW_UPDATE, Closed.RESET_RECEIVED) == (
        Verdict.STREAM_ERROR, STREAM_CLOSED)
    assert all((state, kind) in RECEIVE for state in State if state is not State.CLOSED
               for kind in (DATA, HEADERS, PRIORITY, RST_STREAM, WINDOW_UPDATE))
