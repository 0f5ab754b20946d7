"""How long a server connection remembers how its closed streams closed (RFC 9113 5.1):
the last ``REMEMBERED`` at least, at most twice as many, and what a late frame gets for a
stream it remembers and for one it forgot."""

from __future__ import annotations

import pytest

from coord.rpc.h2.server import (
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PREFACE,
    SETTINGS,
    STREAM_CLOSED,
    U32,
    WINDOW_UPDATE,
    H2ProtocolError,
    frame,
    grpc_message,
)
from coord.rpc.h2.streams import REMEMBERED, Closed, ClosedStreams
from tests.api.test_h2_fuzz import Core, _block


def test_the_last_closed_streams_are_remembered_and_older_ones_forgotten() -> None:
    closed = ClosedStreams()
    causes = [Closed.ENDED, Closed.RESET_SENT, Closed.RESET_RECEIVED]
    last = 5 * REMEMBERED
    for i in range(1, last + 1):
        closed.add(2 * i + 1, causes[i % 3])
        assert len(closed) <= 2 * REMEMBERED
    for i in range(last - REMEMBERED + 1, last + 1):
        assert closed.cause(2 * i + 1) is causes[i % 3]
    for i in range(1, last - 2 * REMEMBERED + 1):
        assert closed.cause(2 * i + 1) is Closed.FORGOTTEN
    assert closed.cause(2 * last + 3) is Closed.FORGOTTEN  # never closed


def _calls(core: Core, first: int, count: int) -> None:
    for stream_id in range(first, first + 2 * count, 2):
        core.receive(frame(HEADERS, END_HEADERS, stream_id, _block())
                     + frame(DATA, END_STREAM, stream_id, grpc_message(b"q"))
                     + frame(WINDOW_UPDATE, 0, 0, U32.pack(1000)))  # for the answer
    assert not core.streams
    core.data_to_send()


def test_late_data_on_an_ended_stream_still_remembered_ends_the_connection() -> None:
    core = Core()
    core.receive(PREFACE + frame(SETTINGS, 0, 0))
    _calls(core, 1, REMEMBERED + 100)
    last = 1 + 2 * (REMEMBERED + 99)
    late = last - 2 * (REMEMBERED - 1)  # the oldest of the last REMEMBERED
    with pytest.raises(H2ProtocolError) as err:
        core.receive(frame(DATA, 0, late, grpc_message(b"late")))
    assert err.value.code == STREAM_CLOSED


def test_late_data_on_a_forgotten_stream_is_ignored() -> None:
    core = Core()
    core.receive(PREFACE + frame(SETTINGS, 0, 0))
    _calls(core, 1, 2 * REMEMBERED + 100)
    core.receive(frame(DATA, 0, 1, grpc_message(b"late")))  # closed 2,147 streams ago
    assert not core.data_to_send()
