"""RFC 9113 section 5.1, the stream state machine, as tables: the state a stream moves to
when a frame is sent or received, and what a received frame means in each state — accepted,
ignored, or an error (of the stream or of the whole connection) with its code.

No I/O and no asyncio here: the server's connection (:mod:`coord.rpc.h2.connection`) looks
up every stream frame it receives in :data:`RECEIVE` before acting on it, and moves its
streams' :attr:`~coord.rpc.h2.call.Stream.state` with :data:`SENT_END` / :data:`RECEIVED_END`.
The fuzz test (``tests/api/test_h2_fuzz.py``) checks the connection against the same tables.

Server push is never used (SETTINGS_ENABLE_PUSH is 0 both ways), so the reserved states
cannot be entered; they are in the tables so that the machine is the RFC's whole one.
"""

from __future__ import annotations

from enum import IntEnum

from coord.rpc.h2.frames import (
    DATA,
    HEADERS,
    PRIORITY,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    RST_STREAM,
    STREAM_CLOSED,
    WINDOW_UPDATE,
)


class State(IntEnum):
    IDLE = 0
    RESERVED_LOCAL = 1
    RESERVED_REMOTE = 2
    OPEN = 3
    HALF_CLOSED_LOCAL = 4
    HALF_CLOSED_REMOTE = 5
    CLOSED = 6


class Closed(IntEnum):
    """How a closed stream got there; RFC 9113 5.1 answers late frames by it."""

    ENDED = 0
    """END_STREAM both ways."""
    RESET_SENT = 1
    """This side sent RST_STREAM: frames already in flight are ignored."""
    RESET_RECEIVED = 2
    """The peer sent RST_STREAM: it must send nothing more but PRIORITY."""
    FORGOTTEN = 3
    """Never opened (skipped: a higher id was opened), or closed long enough ago that this
    side no longer remembers how: late frames are ignored as after a reset, DATA still
    counted against the connection window, but HEADERS cannot open it (5.1.1)."""


class Verdict(IntEnum):
    ACCEPT = 0
    IGNORE = 1
    """Drop the frame (after flow-control accounting and HPACK decoding)."""
    STREAM_ERROR = 2
    """RST_STREAM with the code; the connection goes on."""
    CONNECTION_ERROR = 3
    """GOAWAY with the code; the connection ends."""


Answer = tuple[Verdict, int]
"""A verdict and its error code (0 unless an error)."""

_OK: Answer = (Verdict.ACCEPT, 0)
_DROP: Answer = (Verdict.IGNORE, 0)
_CONN_PROTOCOL: Answer = (Verdict.CONNECTION_ERROR, PROTOCOL_ERROR)
_STREAM_CLOSED: Answer = (Verdict.STREAM_ERROR, STREAM_CLOSED)
_CONN_STREAM_CLOSED: Answer = (Verdict.CONNECTION_ERROR, STREAM_CLOSED)

FRAME_KINDS = (DATA, HEADERS, PRIORITY, RST_STREAM, PUSH_PROMISE, WINDOW_UPDATE)
"""The frame types that belong to a stream (CONTINUATION is part of its HEADERS)."""

_S = State
RECEIVE: dict[tuple[int, int], Answer] = {}
"""(state, frame type) → what a received frame means (before END_STREAM is applied).
A frame type missing for a state is :data:`_CONN_PROTOCOL` (none is missing today)."""

for _kind in FRAME_KINDS:
    # idle: only HEADERS opens a stream; PRIORITY may be sent for any stream (5.1, 5.3.2)
    RECEIVE[_S.IDLE, _kind] = _OK if _kind in (HEADERS, PRIORITY) else _CONN_PROTOCOL
    # reserved (local): the peer may only reprioritise, give credit or reset it
    RECEIVE[_S.RESERVED_LOCAL, _kind] = (_OK if _kind in (PRIORITY, WINDOW_UPDATE, RST_STREAM)
                                         else _CONN_PROTOCOL)
    # reserved (remote): the pushed response's HEADERS, PRIORITY or RST_STREAM
    RECEIVE[_S.RESERVED_REMOTE, _kind] = (_OK if _kind in (HEADERS, PRIORITY, RST_STREAM)
                                          else _CONN_PROTOCOL)
    # open and half-closed (local): the peer may send anything (push is refused elsewhere)
    RECEIVE[_S.OPEN, _kind] = _OK
    RECEIVE[_S.HALF_CLOSED_LOCAL, _kind] = _OK
    # half-closed (remote): the peer ended its side; only credit, priority and reset remain
    RECEIVE[_S.HALF_CLOSED_REMOTE, _kind] = (
        _OK if _kind in (WINDOW_UPDATE, PRIORITY, RST_STREAM) else _STREAM_CLOSED)

CLOSED_RECEIVE: dict[tuple[int, int], Answer] = {}
"""(how it closed, frame type) → what a frame received on a closed stream means."""

for _kind in FRAME_KINDS:
    # after END_STREAM both ways: credit and resets may still come for a short while; more
    # DATA or HEADERS from a peer that ended its side is a connection error STREAM_CLOSED
    CLOSED_RECEIVE[Closed.ENDED, _kind] = (
        _OK if _kind == PRIORITY else _DROP if _kind in (WINDOW_UPDATE, RST_STREAM)
        else _CONN_STREAM_CLOSED)
    # after this side's RST_STREAM: whatever the peer had in flight is ignored
    CLOSED_RECEIVE[Closed.RESET_SENT, _kind] = _OK if _kind == PRIORITY else _DROP
    # closed long ago, or never opened (implicitly closed when a higher id was, 5.1.1):
    # a HEADERS is an unexpected stream identifier, the rest is ignored
    CLOSED_RECEIVE[Closed.FORGOTTEN, _kind] = (
        _OK if _kind == PRIORITY else _CONN_PROTOCOL if _kind == HEADERS else _DROP)
    # after the peer's RST_STREAM: anything but PRIORITY is a stream error STREAM_CLOSED
    CLOSED_RECEIVE[Closed.RESET_RECEIVED, _kind] = _OK if _kind == PRIORITY else _STREAM_CLOSED

# Push is never enabled, so PUSH_PROMISE is a connection error in every state (8.4).
for _state in State:
    if _state is not State.CLOSED:
        RECEIVE[_state, PUSH_PROMISE] = _CONN_PROTOCOL
for _how in Closed:
    CLOSED_RECEIVE[_how, PUSH_PROMISE] = _CONN_PROTOCOL

# The states and causes as plain ints, for the per-frame paths (an enum member costs an
# attribute lookup each time); they equal the enum members, so the tables take either.
OPEN, HALF_CLOSED_LOCAL, HALF_CLOSED_REMOTE, CLOSED = 3, 4, 5, 6
ENDED, RESET_SENT, RESET_RECEIVED = 0, 1, 2
assert (OPEN, HALF_CLOSED_LOCAL, HALF_CLOSED_REMOTE, CLOSED) == (
    State.OPEN, State.HALF_CLOSED_LOCAL, State.HALF_CLOSED_REMOTE, State.CLOSED)
assert (ENDED, RESET_SENT, RESET_RECEIVED) == (
    Closed.ENDED, Closed.RESET_SENT, Closed.RESET_RECEIVED)

LOCAL_CLOSED = frozenset((HALF_CLOSED_LOCAL, CLOSED))
"""The states in which this side has sent END_STREAM; the peer has in those ``>=
HALF_CLOSED_REMOTE``."""

RECEIVED_END: dict[int, int] = {
    OPEN: HALF_CLOSED_REMOTE,
    HALF_CLOSED_LOCAL: CLOSED,
    int(State.RESERVED_REMOTE): HALF_CLOSED_LOCAL,  # its HEADERS without END_STREAM
}
"""The state after a received frame with END_STREAM (states not listed do not change)."""

SENT_END: dict[int, int] = {
    OPEN: HALF_CLOSED_LOCAL,
    HALF_CLOSED_REMOTE: CLOSED,
}
"""The state after this side sends a frame with END_STREAM."""


def opened(end_stream: bool) -> int:
    """The state of a stream the peer opens with HEADERS (idle → open or half-closed)."""
    return HALF_CLOSED_REMOTE if end_stream else OPEN


REMEMBERED = 1024
"""Closed streams whose cause is kept, at least (RFC 9113 5.1 lets an endpoint limit for
how long it tells "reset by me" from "ended"; between this and twice as many, in two
generations); older ones are :attr:`Closed.FORGOTTEN`."""


class ClosedStreams:
    """How recently closed streams closed: the last :data:`REMEMBERED` at least.

    Two generations of at most :data:`REMEMBERED` each: when the newer one is full it
    becomes the older one and the older one is dropped whole (no copy: a stream's close
    costs one dict store; the connection's hot path does it inline, see
    :meth:`coord.rpc.h2.core.ServerCore._forget`)."""

    __slots__ = ("older", "recent")

    def __init__(self) -> None:
        self.recent: dict[int, int] = {}
        self.older: dict[int, int] = {}

    def add(self, stream_id: int, how: int) -> None:
        recent = self.recent
        recent[stream_id] = how
        if len(recent) >= REMEMBERED:
            self.age()

    def age(self) -> None:
        """The newer generation becomes the older one; the older one is forgotten."""
        self.older, self.recent = self.recent, {}

    def cause(self, stream_id: int) -> Closed:
        how = self.recent.get(stream_id)
        if how is None:
            how = self.older.get(stream_id, Closed.FORGOTTEN)
        return Closed(how)

    def __len__(self) -> int:
        return len(self.recent) + len(self.older)


def received(state: int, kind: int, closed: Closed = Closed.FORGOTTEN) -> Answer:
    """What frame type ``kind`` received on a stream in ``state`` means (``closed``: how a
    closed stream got there)."""
    if state == CLOSED:
        return CLOSED_RECEIVE.get((closed, kind), _DROP)
    return RECEIVE.get((state, kind), _CONN_PROTOCOL)
