"""The sans-I/O server connection (:class:`coord.rpc.h2.core.ServerCore`) fed random and
mutated byte streams: whatever arrives, ``receive`` either takes it or raises a protocol
error (:class:`H2ProtocolError`, :class:`hpack.HpackError`) — nothing else — and the
connection's state stays consistent (streams in legal RFC 9113 5.1 states, flow-control
windows within bounds, the response bytes held counted exactly).

No socket and no event loop: the core's hooks are answered here (a unary call answered at
once, a request stream's messages taken as they come). Hypothesis runs derandomized with
a fixed number of examples, so CI sees the same cases every time.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coord.rpc.h2 import hpack
from coord.rpc.h2.call import Stream
from coord.rpc.h2.core import ServerCore
from coord.rpc.h2.frames import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    MAX_WINDOW,
    PING,
    PREFACE,
    PRIORITY,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    H2ProtocolError,
    frame,
    grpc_message,
)
from coord.rpc.h2.limits import MAX_CONCURRENT_STREAMS
from coord.rpc.h2.streams import HALF_CLOSED_LOCAL, HALF_CLOSED_REMOTE, LOCAL_CLOSED, OPEN
from coord.rpc.h2.validate import Head
from tests.api.h2_fuzz_support import Mutation, mutate, mutations, split

FUZZ = settings(max_examples=400, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class _Handler:
    request_deserializer = None
    response_serializer = None

    def __init__(self, streaming: bool) -> None:
        self.request_streaming = streaming
        self.response_streaming = False


UNARY, STREAMING = _Handler(False), _Handler(True)


class _Server:
    max_receive = 1 << 16
    closing = False

    @staticmethod
    def resolve(details: Any) -> Any:
        return None


class Core(ServerCore):
    """The core with its hooks answered synchronously: a unary call answers at once, a
    request stream's messages are taken as they arrive and answered at its end."""

    def __init__(self) -> None:
        super().__init__(_Server())
        self.start()
        self.calls = 0

    def _start_call(self, stream: Stream, headers: list[tuple[bytes, bytes]],
                    head: Head) -> None:
        self.calls += 1
        path = head[1]
        stream.handler = STREAMING if path.endswith(b"Stream") else UNARY

    def _request_complete(self, stream: Stream) -> None:
        stream.inbox.popleft()
        stream.queued = 0
        self._release(stream, stream.held)
        self._send_unary(stream, b"answer" * 100)

    def _end_remote(self, stream: Stream) -> None:
        super()._end_remote(stream)
        if (stream.handler is STREAMING and stream.id in self.streams
                and stream.state not in LOCAL_CLOSED):
            self._send_unary(stream, b"total")  # the request stream ended: answer it

    def _deliver(self, stream: Stream, message: bytes) -> None:
        super()._deliver(stream, message)
        if stream.handler is STREAMING:  # the handler takes it at once
            taken = stream.inbox.popleft()
            stream.queued -= len(taken)
            self._release(stream, len(taken))
            self._ack_stream(stream)


def check(core: Core) -> None:
    """The invariants that hold between any two reads."""
    assert len(core.streams) <= MAX_CONCURRENT_STREAMS
    for stream_id, stream in core.streams.items():
        assert stream_id % 2 == 1 and stream_id <= core._last_id
        assert stream.state in (OPEN, HALF_CLOSED_LOCAL, HALF_CLOSED_REMOTE)
        assert not stream.reset
        assert stream.held >= 0 and stream.queued >= 0
    assert set(core._blocked) <= set(core.streams)
    assert core._pending_bytes == sum(len(chunk) for s in core.streams.values()
                                      for chunk in s.pending)
    assert 0 <= core._recv_window <= core._conn_window
    assert 0 <= core._conn_unacked <= core._conn_window
    assert core._send_window <= MAX_WINDOW


def feed(chunks: list[bytes]) -> Core:
    """Give ``chunks`` to a fresh core one by one; a protocol error ends the connection
    (GOAWAY written), any other exception fails the test."""
    core = Core()
    for chunk in chunks:
        try:
            core.receive(chunk)
        except (H2ProtocolError, hpack.HpackError) as err:
            core.connection_error(err)
            assert _kinds(core.data_to_send())[-1] == GOAWAY
            return core
        check(core)
        core.data_to_send()
    return core


def _kinds(out: bytes) -> list[int]:
    """The frame types in ``out``, this side's output (whole frames only)."""
    kinds, pos = [], 0
    while pos + 9 <= len(out):
        kinds.append(out[pos + 3])
        pos += 9 + int.from_bytes(out[pos:pos + 3], "big")
    assert pos == len(out)
    return kinds


def _block(path: bytes = b"/s/Echo", extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    fields = ((b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
              (b"content-type", b"application/grpc"), (b"te", b"trailers"), *extra)
    return b"".join(hpack.encode_literal(n, v) for n, v in fields)


stream_ids = st.sampled_from([0, 1, 2, 3, 5, 7, 9, 11, 0x7FFFFFFF])
u32 = st.integers(0, 2**32 - 1)

payloads = {
    DATA: st.one_of(st.binary(max_size=64),
                    st.binary(max_size=200).map(grpc_message)),
    HEADERS: st.one_of(st.just(_block()), st.just(_block(b"/s/Stream")),
                       st.binary(max_size=64),
                       st.lists(st.tuples(st.binary(min_size=1, max_size=12),
                                          st.binary(max_size=12)), max_size=8).map(
                           lambda fs: b"".join(hpack.encode_literal(n, v) for n, v in fs))),
    PRIORITY: st.one_of(st.binary(min_size=5, max_size=5), st.binary(max_size=8)),
    RST_STREAM: st.one_of(u32.map(lambda c: struct.pack(">I", c)), st.binary(max_size=6)),
    SETTINGS: st.one_of(
        st.lists(st.tuples(st.integers(0, 8), u32), max_size=4).map(
            lambda kv: b"".join(struct.pack(">HI", k, v) for k, v in kv)),
        st.binary(max_size=13)),
    PING: st.binary(min_size=7, max_size=9),
    GOAWAY: st.binary(max_size=16),
    WINDOW_UPDATE: st.one_of(u32.map(lambda n: struct.pack(">I", n)), st.binary(max_size=5)),
    CONTINUATION: st.binary(max_size=32),
}


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from([*payloads, 6, 10, 0xFF]))
    flags = draw(st.sampled_from([0, END_STREAM, END_HEADERS, END_STREAM | END_HEADERS,
                                  0x08, 0x20, 0xFF]))
    payload = draw(payloads.get(kind, st.binary(max_size=16)))
    return frame(kind, flags, draw(stream_ids), payload)


@FUZZ
@given(st.lists(frames(), max_size=25), st.lists(st.integers(0, 4096), max_size=6))
def test_random_frame_sequences_raise_only_protocol_errors(
        sequence: list[bytes], cuts: list[int]) -> None:
    data = PREFACE + frame(SETTINGS, 0, 0) + b"".join(sequence)
    feed(split(data, cuts))


VALID = (PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 1 << 20))
         + frame(HEADERS, END_HEADERS, 1, _block())
         + frame(DATA, END_STREAM, 1, grpc_message(b"hello"))
         + frame(HEADERS, END_HEADERS, 3, _block(b"/s/Stream"))
         + frame(DATA, 0, 3, grpc_message(b"one") + grpc_message(b"two")[:4])
         + frame(DATA, 0, 3, grpc_message(b"two")[4:])
         + frame(WINDOW_UPDATE, 0, 3, struct.pack(">I", 1000))
         + frame(PRIORITY, 0, 5, struct.pack(">IB", 0, 15))
         + frame(PING, 0, 0, b"12345678")
         + frame(HEADERS, END_HEADERS | END_STREAM, 3, hpack.encode_literal(b"x-trailer", b"1"))
         + frame(RST_STREAM, 0, 1, struct.pack(">I", 8))
         + frame(HEADERS, 0, 7, _block()[:20]) + frame(CONTINUATION, END_HEADERS, 7,
                                                       _block()[20:])
         + frame(DATA, END_STREAM, 7, grpc_message(b"x"))
         + frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)))


def test_the_valid_conversation_is_served() -> None:
    core = feed([VALID])
    assert core.calls == 3
    assert core.streams == {}


@FUZZ
@given(mutations(len(VALID)), st.lists(st.integers(0, 4096), max_size=6))
def test_mutated_conversations_raise_only_protocol_errors(
        changes: list[Mutation], cuts: list[int]) -> None:
    feed(split(mutate(VALID, changes), cuts))
