from __future__ import annotations

import pytest

from coord.raft import (
    ConfState,
    Entry,
    LogCompacted,
    LogUnavailable,
    MemoryStorage,
    RaftError,
    Snapshot,
)
from coord.raft.log import RaftLog, Unstable
from coord.raft.types import SnapshotMetadata


def ents(*pairs: tuple[int, int]) -> list[Entry]:
    return [Entry(t, i) for t, i in pairs]


def make_log(stable_terms: list[int], unstable_terms: list[int] = ()) -> RaftLog:  # type: ignore[assignment]
    st = MemoryStorage()
    st.append([Entry(t, i + 1) for i, t in enumerate(stable_terms)])
    log = RaftLog(st, 1 << 20)
    first = len(stable_terms) + 1
    if unstable_terms:
        log.append([Entry(t, first + i) for i, t in enumerate(unstable_terms)])
    return log


class TestUnstable:
    def test_truncate_and_append_cases(self) -> None:
        u = Unstable(5)
        u.truncate_and_append(ents((1, 5), (1, 6)))
        assert (u.offset, [e.index for e in u.entries]) == (5, [5, 6])
        u.truncate_and_append(ents((1, 7)))  # plain append
        assert [e.index for e in u.entries] == [5, 6, 7]
        u.truncate_and_append(ents((2, 6)))  # truncate inside
        assert [(e.term, e.index) for e in u.entries] == [(1, 5), (2, 6)]
        u.truncate_and_append(ents((3, 4)))  # replace from before offset
        assert (u.offset, [(e.term, e.index) for e in u.entries]) == (4, [(3, 4)])

    def test_stable_to_ignores_replaced_entries(self) -> None:
        u = Unstable(1)
        u.truncate_and_append(ents((1, 1), (1, 2), (1, 3)))
        u.stable_to(2, 9)  # wrong term: entry 2 was replaced meanwhile
        assert u.offset == 1
        u.stable_to(2, 1)
        assert u.offset == 3 and [e.index for e in u.entries] == [3]
        u.stable_to(7, 1)  # unknown index: no-op
        assert u.offset == 3

    def test_snapshot_terms(self) -> None:
        u = Unstable(1)
        snap = Snapshot(SnapshotMetadata(5, 2, ConfState((1,))))
        u.restore(snap)
        assert u.maybe_term(5) == 2 and u.maybe_term(4) is None
        assert u.maybe_first_index() == 6 and u.maybe_last_index() == 5
        u.stable_snap_to(4)
        assert u.snapshot is not None
        u.stable_snap_to(5)
        assert u.snapshot is None


class TestRaftLog:
    def test_slice_spans_storage_and_unstable(self) -> None:
        log = make_log([1, 1, 2], [2, 3])
        assert [e.index for e in log.slice(2, 6)] == [2, 3, 4, 5]
        assert log.last_index() == 5 and log.term(4) == 2 and log.term(5) == 3
        with pytest.raises(LogUnavailable):
            log.slice(1, 7)

    def test_slice_after_compaction(self) -> None:
        log = make_log([1, 1, 2, 2])
        st = log.storage
        assert isinstance(st, MemoryStorage)
        st.compact(2)
        with pytest.raises(LogCompacted):
            log.slice(2, 4)
        assert log.term(2) == 1  # the compaction point's term stays known
        with pytest.raises(LogCompacted):
            log.term(1)

    def test_maybe_append(self) -> None:
        log = make_log([1, 1, 2])
        assert log.maybe_append(3, 3, 3, tuple(ents((3, 4)))) is None  # prev term mismatch
        assert log.maybe_append(3, 2, 3, tuple(ents((3, 4), (3, 5)))) == 5
        assert log.committed == 3
        # A conflicting entry truncates the suffix.
        assert log.maybe_append(3, 2, 3, tuple(ents((4, 4)))) == 4
        assert [(e.term, e.index) for e in log.all_entries()][-2:] == [(2, 3), (4, 4)]
        # Already-present entries are not re-appended (an old, shorter APP).
        assert log.maybe_append(2, 1, 3, tuple(ents((2, 3)))) == 3
        assert log.last_index() == 4
        # commit never goes beyond the last entry the APP vouched for.
        assert log.maybe_append(2, 1, 10, ()) == 2 and log.committed == 3

    def test_refuses_to_truncate_committed(self) -> None:
        log = make_log([1, 1, 2])
        log.commit_to(3)
        with pytest.raises(RaftError):
            log.maybe_append(2, 1, 3, tuple(ents((5, 3))))

    def test_find_conflict_by_term(self) -> None:
        log = make_log([1, 1, 4, 4, 5, 5])
        assert log.find_conflict_by_term(6, 4) == (4, 4)
        assert log.find_conflict_by_term(6, 9) == (6, 5)
        assert log.find_conflict_by_term(6, 0) == (0, 0)
        assert log.find_conflict_by_term(3, 1) == (2, 1)

    def test_up_to_date(self) -> None:
        log = make_log([1, 2, 2])
        assert log.is_up_to_date(3, 2) and log.is_up_to_date(1, 3)
        assert not log.is_up_to_date(2, 2) and not log.is_up_to_date(9, 1)

    def test_commit_only_current_term(self) -> None:
        log = make_log([1, 1, 2])
        assert not log.maybe_commit(3, 3)  # entry 3 is term 2, leader term 3
        assert log.committed == 0
        assert log.maybe_commit(3, 2)
        assert not log.maybe_commit(2, 2)  # never moves backwards
        buggy = make_log([1, 1, 2])
        assert buggy.maybe_commit(3, 3, allow_old_term=True)

    def test_next_committed_respects_size_limit(self) -> None:
        st = MemoryStorage()
        st.append([Entry(1, i, data=b"x" * 100) for i in range(1, 6)])
        log = RaftLog(st, 250)
        log.commit_to(5)
        assert [e.index for e in log.next_committed()] == [1, 2]
        log.applied_to(2)
        assert [e.index for e in log.next_committed()] == [3, 4]
        with pytest.raises(RaftError):
            log.applied_to(1)
