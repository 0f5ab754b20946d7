"""What a restarted member starts from (``member_ready.recover`` over the WAL's records
replayed by ``coord.storage.records.replay``), the decision the server's recovery and the
simulator share."""

from __future__ import annotations

import pytest

from coord.raft import ConfState, Entry, HardState, MemoryStorage, Snapshot, SnapshotMetadata
from coord.server.member_ready import LogGap, recover
from coord.storage.records import (
    entry_record,
    hard_state_record,
    replay,
    snapshot_marker_record,
)


def _snap(index: int, term: int) -> Snapshot:
    return Snapshot(SnapshotMetadata(index, term, ConfState((1, 2, 3))), b"state")


def test_a_rewrite_after_an_installed_snapshot_replaces_the_entry_it_rewrites() -> None:
    # The log jumps at a snapshot received from the leader (entries 1..2, then the marker
    # of 6, then 7..): an entry rewritten later (13 at term 10 over 13 at term 9) must
    # replace the old one, wherever the jump put it in the list. Found by the simulator
    # (seed 300022) once its disk kept a WAL of records: the old one stayed, and the
    # member restarted with two entries at index 13.
    records = [entry_record(Entry(1, 1)), entry_record(Entry(1, 2)),
               snapshot_marker_record(6, 2)]
    records += [entry_record(Entry(3, i)) for i in range(7, 13)]
    records += [entry_record(Entry(9, 13)), hard_state_record(HardState(9, 0, 10)),
                entry_record(Entry(10, 13)), entry_record(Entry(11, 14)),
                hard_state_record(HardState(11, 2, 10))]
    replayed = replay(records, 1)
    assert [(e.term, e.index) for e in replayed.entries if e.index > 6] == (
        [(3, i) for i in range(7, 13)] + [(10, 13), (11, 14)])
    assert replayed.entry_seq[13] == 12 and replayed.entry_seq[14] == 13
    st = MemoryStorage()
    rec = recover(st, _snap(6, 2), replayed.entries, replayed.hard_state)
    assert [e.index for e in rec.entries] == list(range(7, 15))
    assert (st.first_index(), st.last_index(), st.term(13)) == (7, 14, 10)
    assert rec.applied == 6 and rec.hard_state == HardState(11, 2, 10) and not rec.fresh


def test_a_log_that_no_longer_reaches_the_snapshot_is_refused() -> None:
    st = MemoryStorage()
    with pytest.raises(LogGap) as err:
        recover(st, _snap(6, 2), [Entry(3, 9), Entry(3, 10)], HardState(3, 0, 9))
    assert (err.value.base, err.value.first) == (6, 9)
    assert st.last_index() == 0  # untouched


def test_nothing_persisted_is_a_fresh_start_and_commit_is_at_least_the_snapshot() -> None:
    assert recover(MemoryStorage(), None, [], HardState()).fresh
    rec = recover(MemoryStorage(), _snap(6, 2), [Entry(1, 3)], HardState(2, 1, 4))
    assert not rec.fresh and rec.entries == [] and rec.hard_state == HardState(2, 1, 6)
