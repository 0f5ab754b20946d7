from __future__ import annotations

import pytest

from coord.raft.progress import Inflights, Progress, ProgressState


def test_inflights_window() -> None:
    inf = Inflights(3)
    for i in (5, 7, 9):
        inf.add(i, 10)
    assert inf.full() and inf.count() == 3 and inf.bytes == 30
    with pytest.raises(OverflowError):
        inf.add(11, 1)
    inf.free_le(6)
    assert inf.count() == 2 and not inf.full() and inf.bytes == 20
    inf.free_le(100)
    assert inf.count() == 0 and inf.bytes == 0


def test_inflights_byte_limit() -> None:
    inf = Inflights(100, max_bytes=50)
    inf.add(1, 30)
    assert not inf.full()
    inf.add(2, 30)
    assert inf.full()


def test_probe_sends_one_message_then_pauses() -> None:
    pr = Progress(next_index=5, max_inflight=4)
    assert pr.state == ProgressState.PROBE and not pr.is_paused()
    pr.sent_entries(2, 20)
    assert pr.is_paused() and pr.next == 5  # probe does not advance next optimistically
    assert pr.maybe_update(6)
    assert pr.match == 6 and pr.next == 7 and not pr.is_paused()


def test_replicate_pipelines_until_window_full() -> None:
    pr = Progress(next_index=1, max_inflight=2)
    pr.become_replicate()
    pr.sent_entries(3, 30)
    assert pr.next == 4 and not pr.is_paused()
    pr.sent_entries(1, 10)
    assert pr.next == 5 and pr.is_paused()
    pr.maybe_update(3)
    pr.inflights.free_le(3)
    assert not pr.is_paused()


def test_maybe_decr_to() -> None:
    pr = Progress(next_index=10, max_inflight=4)
    assert not pr.maybe_decr_to(5, 2)  # stale: probe expects a rejection of next-1 = 9
    assert pr.maybe_decr_to(9, 4)
    assert pr.next == 5
    pr.match = 3
    pr.become_replicate()
    assert pr.next == 4
    assert not pr.maybe_decr_to(2, 0)  # rejection below match is stale
    pr.next = 8
    assert pr.maybe_decr_to(7, 0) and pr.next == 4  # replicate falls back to match + 1


def test_snapshot_state() -> None:
    pr = Progress(next_index=2, max_inflight=4)
    pr.become_snapshot(10)
    assert pr.is_paused() and pr.pending_snapshot == 10
    pr.become_probe()
    assert pr.state == ProgressState.PROBE and pr.next == 11 and pr.pending_snapshot == 0
