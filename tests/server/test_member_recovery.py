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


def test_entries_older_than_an_installed_snapshot_s_term_are_not_recovered() -> None:
    # The member held 1..8 of terms up to 5, then installed a snapshot from the leader at
    # index 7, term 8 (its own 7 had another term), and crashed before the leader's next
    # entries arrived: the WAL still holds its old 8 (term 5), written before the
    # snapshot. No log has a term-5 entry after a term-8 one: it is not part of the log
    # (found by the simulator, seed 303204: "log matching violated at 5/8").
    stale = [Entry(2, i) for i in range(1, 5)] + [Entry(4, 5), Entry(5, 6), Entry(5, 7),
                                                  Entry(5, 8)]
    st = MemoryStorage()
    rec = recover(st, _snap(7, 8), stale, HardState(15, 0, 7))
    assert rec.entries == [] and rec.stale == 1 and st.last_index() == 7 and st.term(7) == 8
    # entries the leader sent after the snapshot are kept (terms from the snapshot's on)
    rec = recover(MemoryStorage(), _snap(7, 8), [*stale[:7], Entry(15, 8)],
                  HardState(15, 0, 8))
    assert [(e.term, e.index) for e in rec.entries] == [(15, 8)]
