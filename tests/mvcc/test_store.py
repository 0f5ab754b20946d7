"""KVStore internals: records, generations, compaction layout, batches, snapshots."""

from __future__ import annotations

import pytest

from coord.errors import Compacted, FutureRevision
from coord.mvcc.store import KVStore, SnapshotReuse
from coord.server.apply import Applier
from tests.server.reqs import Client, delete, put, txn


def test_put_delete_generations() -> None:
    s = KVStore()
    assert s.put_commit(b"k", b"1", 0) == (None, 2)
    prev, rev = s.put_commit(b"k", b"2", 7)
    assert prev == (2, 2, 1, 0, b"1") and rev == 3
    assert [k for k, _ in s.delete_range(b"k")] == [b"k"]
    assert s.commit() == 4
    s.put(b"k", b"3", 0)
    s.commit()
    assert s.history(b"k") == [
        (2, 2, 1, 0, b"1"),
        (3, 2, 2, 7, b"2"),
        (4, 0, 0, 0, None),
        (5, 5, 1, 0, b"3"),
    ]
    assert s.get(b"k", 4) is None and s.get(b"k", 3) == (3, 2, 2, 7, b"2")
    assert s.get(b"k", 1) is None


def test_batch_sees_staged_writes_and_rollback_undoes_them() -> None:
    s = KVStore()
    s.put_commit(b"a", b"1", 0)
    s.put(b"a", b"2", 0)
    s.put(b"new", b"x", 0)
    items, count, hrev = s.range(b"\0", b"\0")
    assert count == 2 and hrev == 3 and items[0][1][4] == b"2"
    with pytest.raises(FutureRevision):
        s.range(b"a", rev=4)
    s.rollback()
    assert s.current_revision == 2 and not s.in_write
    assert s.range(b"\0", b"\0")[1] == 1 and s.get(b"new") is None
    assert s.commit() == 2  # nothing staged: no revision


def test_delete_of_nothing_stages_nothing() -> None:
    s = KVStore()
    assert s.delete_range(b"a", b"z") == []
    assert s.commit() == 1


def test_compaction_layout() -> None:
    s = KVStore()
    s.put_commit(b"live", b"1", 0)  # 2
    s.put_commit(b"live", b"2", 0)  # 3
    s.put_commit(b"gone", b"1", 0)  # 4
    s.delete_range(b"gone")
    s.commit()  # 5
    s.put_commit(b"late", b"1", 0)  # 6
    s.delete_range(b"late")
    s.commit()  # 7
    s.compact(6)
    assert s.history(b"live") == [(3, 2, 2, 0, b"2")]
    assert s.history(b"gone") == []  # tombstone below the compaction: key dropped
    assert s.history(b"late") == [(6, 6, 1, 0, b"1"), (7, 0, 0, 0, None)]
    assert s.log_entry(5) is None and s.log_entry(6) is not None
    assert len(s) == 2
    s.compact(7)
    assert s.history(b"late") == [(7, 0, 0, 0, None)]  # kept: the log at 7 still has it
    assert s.log_entry(7) is not None
    with pytest.raises(Compacted):
        s.compact(7)
    with pytest.raises(FutureRevision):
        s.compact(8)


def test_compaction_cost_ignores_untouched_keys() -> None:
    s = KVStore()
    for i in range(100):
        s.put_commit(b"k%03d" % i, b"v", 0)
    s.compact(50)
    s.put_commit(b"k000", b"w", 0)
    s.compact(s.current_revision)
    assert s.history(b"k000") == [(102, 2, 2, 0, b"w")]
    assert s.history(b"k099") == [(101, 101, 1, 0, b"v")]


def test_same_key_twice_in_one_revision_compacts_and_snapshots_consistently() -> None:
    """etcd's interval check lets ``put k`` + ``delete [a, "\\0")`` into one txn."""
    c = Client()
    c.txn(txn([], [put(b"a", b"1"), delete(b"a", b"\0")]))
    assert c.get(b"a").count == 0
    c.compact(2)
    snap = c.a.snapshot()
    other = Applier()
    other.restore(snap)
    assert other.hash_kv(0) == c.a.hash_kv(0) and other.snapshot() == snap


def test_range_end_rules_on_store() -> None:
    s = KVStore()
    for k in (b"a", b"b", b"c"):
        s.put_commit(k, k, 0)
    assert [k for k, _ in s.range(b"a", b"\0")[0]] == [b"a", b"b", b"c"]
    assert s.range(b"b", b"a") == ([], 0, 4)
    items, count, _ = s.range(b"a", b"\0", limit=2)
    assert len(items) == 2 and count == 3
    assert s.range(b"a", b"\0", count_only=True) == ([], 3, 4)


def test_snapshot_of_fresh_store() -> None:
    s = KVStore()
    data = s.snapshot()
    t = KVStore()
    t.restore(data)
    assert t.current_revision == 1 and t.compact_revision == -1 and t.snapshot() == data
    with pytest.raises(ValueError, match="trailing"):
        t.restore(data + b"x")


def test_compact_zero_and_one_on_fresh_store() -> None:
    s = KVStore()
    s.compact(0)
    assert s.compact_revision == 0
    s.compact(1)
    with pytest.raises(Compacted):
        s.compact(1)
    s.put_commit(b"a", b"1", 0)
    t = KVStore()
    t.restore(s.snapshot())
    assert t.snapshot() == s.snapshot()


def _history(s: KVStore, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        s.put_commit(b"k%03d" % (i % 37), b"v%d" % i, 0)
        if i % 11 == 0:
            s.delete_range(b"k%03d" % ((i * 7) % 37))
            s.commit()


def test_snapshot_in_slices_is_the_snapshot_taken_at_its_first_piece() -> None:
    """A member builds big snapshots in slices between other work (heartbeats, requests):
    the bytes must be exactly those of the state when the build started, whatever is
    written meanwhile, and restore to the same store."""
    s = KVStore()
    _history(s, 500)
    s.compact(120)
    _history(s, 300, start=500)
    whole = s.snapshot()
    chunks = s.snapshot_chunks(step=7)
    parts = [next(chunks)]
    for piece in chunks:
        parts.append(piece)
        _history(s, 3, start=900 + len(parts) * 3)  # writes between slices
    assert len(parts) > 40 and b"".join(parts) == whole
    t = KVStore()
    t.restore(whole)
    assert t.snapshot() == whole and t.current_revision < s.current_revision


def _build(s: KVStore, reuse: SnapshotReuse | None, step: int = 10,
           writes_between: int = 0) -> tuple[bytes, SnapshotReuse, int]:
    """Build a snapshot of ``s`` in pieces (writing in between); return its bytes, the
    reuse record over them and how many revisions were serialised (not copied)."""
    whole = s.snapshot()
    build = s.snapshot_chunks(step=step, reuse=reuse)
    parts = [bytes(next(build))]
    copied = 0
    for piece in build:
        if isinstance(piece, memoryview):
            copied += 1
        parts.append(bytes(piece))
        if writes_between:
            _history(s, writes_between, start=2000 + len(parts))
    data = b"".join(parts)
    assert data == whole
    assert build.reuse is not None
    return data, build.reuse.over(memoryview(data)), copied


def test_snapshot_reuses_the_previous_one_and_equals_a_full_build() -> None:
    """A member snapshots every N entries; the history below the previous snapshot has not
    changed since, so the next build copies it and serialises only the new revisions —
    and its bytes are exactly a full build's."""
    s = KVStore()
    _history(s, 300)
    s.compact(100)
    _history(s, 50, start=300)
    data, reuse, copied = _build(s, None, writes_between=2)
    assert copied == 0
    _history(s, 120, start=400)
    data2, reuse2, copied2 = _build(s, reuse, writes_between=1)
    assert copied2 == 1 and len(data2) > len(data)
    assert reuse2.first == reuse.first and reuse2.last > reuse.last
    # nothing written since: the whole log is copied
    data3, _, copied3 = _build(s, reuse2)
    assert copied3 == 1 and data3 == s.snapshot()
    t = KVStore()
    t.restore(data3)
    assert t.snapshot() == data3


def test_snapshot_reuse_is_ignored_after_compaction_restore_or_for_another_store() -> None:
    s = KVStore()
    _history(s, 200)
    _, reuse, _ = _build(s, None)
    _history(s, 30, start=200)
    s.compact(150)
    _, after_compact, copied = _build(s, reuse)
    assert copied == 0
    s.restore(s.snapshot())
    _, _, copied = _build(s, after_compact)
    assert copied == 0
    other = KVStore()
    _history(other, 200)
    _, _, copied = _build(other, reuse)
    assert copied == 0


def test_snapshot_reuse_chain_under_random_writes_and_compactions() -> None:
    import random

    rng = random.Random(5)
    s = KVStore()
    reuse = None
    copies = 0
    for round_ in range(40):
        _history(s, rng.randrange(0, 40), start=round_ * 50)
        if rng.random() < 0.2 and s.current_revision > 3:
            s.compact(rng.randrange(max(2, s.compact_revision), s.current_revision))
        _, reuse, copied = _build(s, reuse, step=rng.choice((1, 5, 50)),
                                  writes_between=rng.choice((0, 0, 1)))
        copies += copied
    assert copies > 10


def test_snapshot_in_slices_stops_if_the_store_is_compacted_or_restored() -> None:
    s = KVStore()
    _history(s, 200)
    chunks = s.snapshot_chunks(step=10)
    next(chunks)
    s.compact(50)
    with pytest.raises(ValueError, match="compacted or restored"):
        list(chunks)
    chunks = s.snapshot_chunks(step=10)
    next(chunks)
    s.restore(s.snapshot())
    with pytest.raises(ValueError, match="compacted or restored"):
        list(chunks)
