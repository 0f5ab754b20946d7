"""The sans-I/O client call (:class:`coord.rpc.h2.client_core.ClientCore`) fed random and
mutated server byte streams, interleaved with the caller's writes and its end of the
request: whatever the server sends, ``receive`` either takes it or raises a protocol error
(:data:`~coord.rpc.h2.client_core.PROTOCOL_ERRORS`) — nothing else — and the call never
hangs: a frame that ends it (trailers or DATA with END_STREAM, RST_STREAM on its stream,
GOAWAY) always ends it, the server's SETTINGS always make it ready, data never waits while
there is credit, and once ended it has an answer or an error and writes nothing more.

Alongside: what the core sends stays within the credit the server gave, in order, in
frames no larger than allowed, with END_STREAM once and last. Hypothesis runs derandomized
with a fixed number of examples, so CI sees the same cases every time.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coord.rpc.h2 import hpack
from coord.rpc.h2.client_core import PROTOCOL_ERRORS, ClientCore
from coord.rpc.h2.frames import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    MAX_FRAME,
    MAX_WINDOW,
    PING,
    PRIORITY,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_FRAME_SIZE,
    WINDOW_UPDATE,
    frame,
    grpc_message,
)
from coord.rpc.h2.response import StreamCallError
from coord.rpc.h2.streams import CLOSED, HALF_CLOSED_LOCAL, OPEN
from coord.rpc.status import StatusCode
from tests.api.h2_fuzz_support import Mutation, mutate, mutations, split

FUZZ = settings(max_examples=400, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Core(ClientCore):
    """The core with its hooks recorded."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:2380", "/s/Sum")
        self.ready = False
        self.ended = 0
        self.start()

    def _on_ready(self) -> None:
        self.ready = True

    def _on_ended(self) -> None:
        self.ended += 1


def split_frames(data: bytes) -> tuple[list[tuple[int, int, int, bytes]], int]:
    """The complete frames at the start of ``data`` and the bytes they take."""
    frames, pos = [], 0
    while pos + 9 <= len(data):
        length = int.from_bytes(data[pos:pos + 3], "big")
        if pos + 9 + length > len(data):
            break
        stream = int.from_bytes(data[pos + 5:pos + 9], "big") & 0x7FFFFFFF
        frames.append((data[pos + 3], data[pos + 4], stream, data[pos + 9:pos + 9 + length]))
        pos += 9 + length
    return frames, pos


def ends_the_call(kind: int, flags: int, stream: int, payload: bytes) -> bool:
    """Whether a well-formed frame of this shape, read while the call lives, ends it (or
    the connection): the oracle for "never hangs"."""
    if kind == GOAWAY:
        return True  # valid or not: the call ends either way
    if stream == 1 and kind == RST_STREAM:
        return True
    if stream == 1 and kind == HEADERS and flags & END_STREAM and flags & END_HEADERS:
        return True
    if stream == 1 and kind == DATA and flags & END_STREAM:
        return True
    return len(payload) > MAX_FRAME  # the frame is too large: a connection error


@dataclass
class Conversation:
    """One call: the server's bytes fed so far, what the caller wrote, what the core sent."""

    core: Core = field(default_factory=Core)
    fed: bytearray = field(default_factory=bytearray)
    written: list[bytes] = field(default_factory=list)
    sent: bytearray = field(default_factory=bytearray)
    """The client's bytes (after the connection preface)."""
    was_closed: bool = False

    def __post_init__(self) -> None:
        out = self.core.data_to_send()
        assert out.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        self.sent += out[24:]

    def receive(self, chunk: bytes) -> None:
        core = self.core
        alive = not core.closed
        self.fed += chunk
        try:
            core.receive(chunk)
        except PROTOCOL_ERRORS as err:
            assert alive, "nothing is read once the call is dead"
            core.connection_error(err)
            out = core.data_to_send()
            assert split_frames(out)[0][-1][0] == GOAWAY
            self.sent += out
        self.check()

    def write(self, size: int) -> None:
        core = self.core
        message = bytes(range(256)) * (size // 256) + bytes(size % 256)
        try:
            core.send_message(message)
        except StreamCallError:
            assert core.closed or core._end_queued
        else:
            self.written.append(message)
        self.check()

    def finish(self) -> None:
        self.core.end_request()
        self.check()

    def check(self) -> None:
        core = self.core
        out = core.data_to_send()
        if core.closed:
            # Ended once; nothing is written after the step that ended it.
            assert core.ended == 1 and core.state == CLOSED and not core._pending
            assert not (self.was_closed and out)
            self.was_closed = True
            self.sent += out
            self._check_sent()
            return
        self.sent += out
        self._check_sent()
        # The state's bookkeeping.
        assert core.state in (OPEN, HALF_CLOSED_LOCAL)
        assert core.ended == 0
        assert core._pending_size == sum(len(chunk) for chunk in core._pending)
        assert core._send_window <= MAX_WINDOW and core._stream_window <= MAX_WINDOW
        # Never hangs: data waits only for credit; an ended request stream is said.
        if core._pending:
            assert min(core._stream_window, core._send_window) <= 0
        elif core._end_queued:
            assert core.state == HALF_CLOSED_LOCAL
        frames, _ = split_frames(bytes(self.fed))
        if frames and frames[0][0] == SETTINGS and not frames[0][1] & ACK \
                and not frames[0][2] and len(frames[0][3]) % 6 == 0:
            assert core.ready, "the server's SETTINGS were read: open() must return"
        ending = [f for f in frames if ends_the_call(*f)]
        assert not ending, f"the call lives after {ending[0][:3]}"
        # The send windows, modelled from the frames both ways (RFC 9113 6.9).
        initial, stream_credit, conn_credit = DEFAULT_WINDOW, 0, 0
        for kind, flags, stream, payload in frames:
            if kind == SETTINGS and not flags & ACK:
                for key, value in struct.iter_unpack(">HI", payload):
                    initial = value if key == SETTINGS_INITIAL_WINDOW_SIZE else initial
            elif kind == WINDOW_UPDATE and stream in (0, 1):
                increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
                if stream:
                    stream_credit += increment
                else:
                    conn_credit += increment
        sent = sum(len(f[3]) for f in split_frames(bytes(self.sent))[0] if f[0] == DATA)
        assert core._stream_window == initial + stream_credit - sent
        assert core._send_window == DEFAULT_WINDOW + conn_credit - sent

    def _check_sent(self) -> None:
        """What the client sent: DATA in order and within the credit, END_STREAM once and
        last on the stream, nothing after the call ended but its RST_STREAM or GOAWAY."""
        frames, used = split_frames(bytes(self.sent))
        assert used == len(self.sent), "the client writes whole frames"
        # The largest frame the server allowed at some point (a later SETTINGS may lower it).
        max_frame = max([MAX_FRAME, *(value for kind, flags, _, payload in split_frames(
            bytes(self.fed))[0] if kind == SETTINGS and not flags & ACK
            for key, value in struct.iter_unpack(">HI", payload[:len(payload) // 6 * 6])
            if key == SETTINGS_MAX_FRAME_SIZE)])
        data = bytearray()
        end_seen = False
        for kind, flags, stream, payload in frames:
            if kind == DATA:
                assert stream == 1 and not end_seen
                assert len(payload) <= max_frame
                data += payload
                end_seen = bool(flags & END_STREAM)
        assert len(data) <= DEFAULT_WINDOW + self.core._credit_total
        assert b"".join(grpc_message(m) for m in self.written).startswith(bytes(data))

    def end(self) -> bytes | StreamCallError:
        """The connection closes (EOF): the call has an answer or an error."""
        core = self.core
        core.connection_closed("")
        assert core.closed and core.ended == 1 and core.state == CLOSED
        assert core.data_to_send() == b""
        try:
            return core.result()
        except StreamCallError as err:
            return err


# -- what a server may send ------------------------------------------------------------

def _block(*fields: tuple[bytes, bytes]) -> bytes:
    return b"".join(hpack.encode_literal(n, v) for n, v in fields)


RESPONSE = hpack.encode_indexed(8) + _block((b"content-type", b"application/grpc"))
TRAILERS_OK = _block((b"grpc-status", b"0"))

stream_ids = st.sampled_from([0, 1, 1, 1, 2, 3, 5, 0x7FFFFFFF])
u32 = st.integers(0, 2**32 - 1)
settings_payload = st.lists(
    st.tuples(st.sampled_from([1, 2, 3, SETTINGS_INITIAL_WINDOW_SIZE,
                               SETTINGS_MAX_FRAME_SIZE, 6, 8]),
              st.one_of(st.integers(0, 70_000), u32)), max_size=4).map(
    lambda kv: b"".join(struct.pack(">HI", k, v) for k, v in kv))

payloads = {
    DATA: st.one_of(st.binary(max_size=64), st.binary(max_size=200).map(grpc_message)),
    HEADERS: st.one_of(
        st.just(RESPONSE), st.just(TRAILERS_OK), st.just(hpack.encode_indexed(8)),
        st.builds(lambda c, m: _block((b"grpc-status", c), (b"grpc-message", m)),
                  st.sampled_from([b"0", b"2", b"14", b"99", b"x", b""]),
                  st.binary(max_size=12)),
        st.binary(max_size=64)),
    PRIORITY: st.one_of(st.binary(min_size=5, max_size=5), st.binary(max_size=8)),
    RST_STREAM: st.one_of(u32.map(lambda c: struct.pack(">I", c)), st.binary(max_size=6)),
    SETTINGS: st.one_of(settings_payload, st.binary(max_size=13)),
    PUSH_PROMISE: st.binary(max_size=16),
    PING: st.binary(min_size=7, max_size=9),
    GOAWAY: st.binary(max_size=16),
    WINDOW_UPDATE: st.one_of(st.integers(0, 2**31).map(lambda n: struct.pack(">I", n)),
                             st.binary(max_size=5)),
    CONTINUATION: st.binary(max_size=32),
}


@st.composite
def any_frames(draw: st.DrawFn) -> bytes:
    """A frame of any type, flags, stream and payload: mostly broken."""
    kind = draw(st.sampled_from([*payloads, 10, 0xFF]))
    flags = draw(st.sampled_from([0, END_STREAM, END_HEADERS, END_STREAM | END_HEADERS,
                                  0x08, 0x20, 0xFF]))
    payload = draw(payloads.get(kind, st.binary(max_size=16)))
    return frame(kind, flags, draw(stream_ids), payload)


increments = st.one_of(st.integers(1, 70_000), st.integers(1, 2**31 - 1))
going_on = st.one_of(
    st.builds(lambda p: frame(SETTINGS, 0, 0, p), st.lists(
        st.tuples(st.sampled_from([SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, 3]),
                  st.integers(0, 70_000)), max_size=3).map(
            lambda kv: b"".join(struct.pack(">HI", k, v) for k, v in kv))),
    st.just(frame(SETTINGS, ACK, 0)),
    st.just(frame(PING, 0, 0, b"12345678")),
    st.builds(lambda s, n: frame(WINDOW_UPDATE, 0, s, struct.pack(">I", n)),
              st.sampled_from([0, 1]), increments),
    st.just(frame(HEADERS, END_HEADERS, 1, RESPONSE)),
    st.builds(lambda m: frame(DATA, 0, 1, grpc_message(m)), st.binary(max_size=100)),
    st.just(frame(PRIORITY, 0, 3, struct.pack(">IB", 0, 15))),
)
"""Frames a server may send while the call goes on: credit, settings, the response."""
ending = st.one_of(
    st.builds(lambda m: frame(DATA, END_STREAM, 1, grpc_message(m)), st.binary(max_size=9)),
    st.builds(lambda c: frame(HEADERS, END_HEADERS | END_STREAM, 1,
                              _block((b"grpc-status", c))),
              st.sampled_from([b"0", b"14"])),
    st.builds(lambda c: frame(RST_STREAM, 0, 1, struct.pack(">I", c)), st.integers(0, 13)),
    st.builds(lambda c: frame(GOAWAY, 0, 0, struct.pack(">II", 0, c)), st.integers(0, 13)),
)
"""Frames that end the call."""

server_frames = st.one_of(going_on, going_on, going_on, going_on, going_on, going_on,
                          ending, any_frames())


steps = st.one_of(
    st.tuples(st.just("recv"), st.lists(server_frames, min_size=1, max_size=4)),
    st.tuples(st.just("write"), st.sampled_from([0, 1, 200, 16_379, 16_380, 40_000, 70_000])),
    st.tuples(st.just("finish"), st.none()),
)


@FUZZ
@given(st.sampled_from([True, True, True, False]), st.lists(steps, max_size=20),
       st.lists(st.integers(0, 4096), max_size=4))
def test_random_server_frames_raise_only_protocol_errors_and_the_call_ends(
        settings_first: bool, sequence: list[tuple[str, object]], cuts: list[int]) -> None:
    talk = Conversation()
    if settings_first:
        talk.receive(frame(SETTINGS, 0, 0))
    for what, arg in sequence:
        if what == "recv":
            assert isinstance(arg, list)
            for chunk in split(b"".join(arg), cuts):
                talk.receive(chunk)
        elif what == "write":
            assert isinstance(arg, int)
            talk.write(arg)
        else:
            talk.finish()
    talk.end()


credit = st.one_of(
    st.builds(lambda p: frame(SETTINGS, 0, 0, p), st.lists(st.one_of(
        st.tuples(st.just(SETTINGS_INITIAL_WINDOW_SIZE), st.integers(0, 70_000)),
        st.tuples(st.just(SETTINGS_MAX_FRAME_SIZE), st.integers(MAX_FRAME, 70_000))),
        max_size=3).map(lambda kv: b"".join(struct.pack(">HI", k, v) for k, v in kv))),
    st.just(frame(PING, 0, 0, b"12345678")),
    st.builds(lambda s, n: frame(WINDOW_UPDATE, 0, s, struct.pack(">I", n)),
              st.sampled_from([0, 1]), st.integers(1, 70_000)),
)
"""What a well-behaved server sends before it answers: settings, pings and credit."""


@FUZZ
@given(st.lists(st.one_of(st.tuples(st.just("recv"), st.lists(credit, min_size=1, max_size=3)),
                          st.tuples(st.just("write"), st.integers(0, 70_000))),
                max_size=30),
       st.booleans())
def test_a_well_behaved_server_gets_every_byte_within_its_credit(
        sequence: list[tuple[str, object]], finish_early: bool) -> None:
    talk = Conversation()
    talk.receive(frame(SETTINGS, 0, 0))
    for i, (what, arg) in enumerate(sequence):
        if finish_early and i == len(sequence) // 2:
            talk.finish()
        if what == "recv":
            assert isinstance(arg, list)
            talk.receive(b"".join(arg))
        else:
            assert isinstance(arg, int)
            talk.write(arg)
        assert not talk.core.closed
    # Enough credit for what waits, then the answer.
    core = talk.core
    need = core.buffered + 1
    talk.receive(frame(SETTINGS, 0, 0, struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20))
                 + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", need))
                 + frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", need)))
    talk.finish()
    assert core.state == HALF_CLOSED_LOCAL and core.buffered == 0
    frames, _ = split_frames(bytes(talk.sent))
    data = b"".join(payload for kind, _, _, payload in frames if kind == DATA)
    assert data == b"".join(grpc_message(m) for m in talk.written)
    assert [f for f in frames if f[0] == DATA][-1][1] == END_STREAM
    talk.receive(frame(HEADERS, END_HEADERS, 1, RESPONSE)
                 + frame(DATA, 0, 1, grpc_message(b"sum"))
                 + frame(HEADERS, END_HEADERS | END_STREAM, 1, TRAILERS_OK))
    assert talk.end() == b"sum"


def valid_answer(answer: bytes) -> bytes:
    return (frame(SETTINGS, 0, 0, struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, 1000))
            + frame(SETTINGS, ACK, 0)
            + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20))
            + frame(PING, 0, 0, b"12345678")
            + frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 100_000))
            + frame(PRIORITY, 0, 3, struct.pack(">IB", 0, 15))
            + frame(HEADERS, 0, 1, RESPONSE[:3])
            + frame(CONTINUATION, END_HEADERS, 1, RESPONSE[3:])
            + frame(DATA, 0, 1, grpc_message(answer)[:4])
            + frame(DATA, 0, 1, grpc_message(answer)[4:])
            + frame(HEADERS, END_HEADERS | END_STREAM, 1, TRAILERS_OK))


VALID = valid_answer(b"the answer")


def converse(data: bytes, cuts: list[int]) -> Conversation:
    """The valid conversation's shape: 3 messages written, the server's bytes fed in
    pieces, the request ended halfway through them."""
    talk = Conversation()
    for size in (100, 5000, 40_000):
        talk.write(size)
    pieces = split(data, cuts)
    for i, chunk in enumerate(pieces):
        if i == len(pieces) // 2:
            talk.finish()
        talk.receive(chunk)
    talk.finish()
    return talk


@pytest.mark.parametrize("cuts", [[], [5, 50, 51, 52, 100], list(range(0, 300, 7))])
def test_the_valid_conversation_gets_its_answer(cuts: list[int]) -> None:
    # The request fits the credit (1000 bytes of stream window, then 100,000 more) before
    # the trailers end the call.
    talk = converse(VALID, cuts)
    assert talk.core.closed
    assert talk.core.result() == b"the answer"
    frames, _ = split_frames(bytes(talk.sent))
    kinds = [(kind, flags) for kind, flags, _, _ in frames if kind != DATA]
    assert (SETTINGS, ACK) in kinds and (PING, ACK) in kinds
    assert talk.core.error is not None and talk.core.error.status is StatusCode.OK


@FUZZ
@given(mutations(len(VALID)), st.lists(st.integers(0, 4096), max_size=6))
def test_mutated_conversations_raise_only_protocol_errors_and_the_call_ends(
        changes: list[Mutation], cuts: list[int]) -> None:
    data = mutate(VALID, changes)
    outcome = converse(data, cuts).end()
    assert isinstance(outcome, (bytes, StreamCallError))


ENDINGS = {
    "trailers": frame(HEADERS, END_HEADERS | END_STREAM, 1, TRAILERS_OK),
    "error trailers": frame(HEADERS, END_HEADERS | END_STREAM, 1,
                            _block((b"grpc-status", b"14"))),
    "data with END_STREAM": frame(DATA, END_STREAM, 1, grpc_message(b"x")),
    "rst_stream": frame(RST_STREAM, 0, 1, struct.pack(">I", 8)),
    "goaway": frame(GOAWAY, 0, 0, struct.pack(">II", 1, 0)),
    "push_promise": frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2)),
    "headers on stream 2": frame(HEADERS, END_HEADERS, 2, RESPONSE),
}


@pytest.mark.parametrize("answered", [False, True], ids=["before", "after-headers"])
@pytest.mark.parametrize("name", list(ENDINGS))
def test_every_ending_frame_ends_the_call(name: str, answered: bool) -> None:
    talk = Conversation()
    talk.write(100)
    talk.receive(frame(SETTINGS, 0, 0))
    if answered:
        talk.receive(frame(HEADERS, END_HEADERS, 1, RESPONSE))
    assert not talk.core.closed
    try:
        talk.core.receive(ENDINGS[name])
    except PROTOCOL_ERRORS as err:
        talk.core.connection_error(err)
    assert talk.core.closed
    with pytest.raises(StreamCallError):
        talk.core.send_message(b"more")
    assert isinstance(talk.end(), StreamCallError)
