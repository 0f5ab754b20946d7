"""Which WAL segments a snapshot lets go: never one that holds an entry after the
snapshot's index, even when that entry's write has not been acknowledged yet (snapshots
are built over several loop turns, so writes of later entries overlap them). Releasing up
to the newest record lost such entries: a restart found "WAL has a gap"."""

from __future__ import annotations

from coord.server.member_core import wal_release_point


def test_the_next_entry_s_record_is_the_boundary_when_known() -> None:
    seqs = {404: 40, 405: 41, 406: 42, 407: 43}
    assert wal_release_point(seqs, 405) == 42


def test_an_unacknowledged_next_entry_keeps_everything_from_the_snapshot_entry_on() -> None:
    # 406 and 407 may be in the WAL already, their sequence numbers not yet recorded:
    # only segments wholly before the record of 405 may go.
    seqs = {404: 40, 405: 41}
    assert wal_release_point(seqs, 405) == 41


def test_nothing_is_released_when_neither_record_is_known() -> None:
    # e.g. the member's log starts at an installed snapshot: the next snapshot releases
    assert wal_release_point({}, 405) == 0
