"""Unit tests of the simulator's parts: event loop, network, disk, applier, invariants."""

from __future__ import annotations

import pytest

from coord.raft import ConfState, Entry, HardState, Message, MessageType, Snapshot, SnapshotMetadata
from coord.server.member_ready import LogGap
from tests.sim.disk import Disk, DiskError
from tests.sim.eventloop import EventLoop, sub_rng
from tests.sim.invariants import BOOT_HASH, Invariants, Violation
from tests.sim.kv import INITIAL_REVISION, KVStore, Request
from tests.sim.network import NetOptions, Network
from tests.sim.options import draw_options

# ---------------------------------------------------------------- event loop


def test_events_run_in_time_then_scheduling_order() -> None:
    loop = EventLoop()
    seen: list[str] = []
    loop.at(5, seen.append, "b")
    loop.at(1, seen.append, "a")
    loop.at(5, seen.append, "c")
    loop.after(3, lambda: loop.after(0, seen.append, "nested"))
    loop.run_until(4)
    assert seen == ["a", "nested"]
    assert loop.now == 4
    loop.run_until(10)
    assert seen == ["a", "nested", "b", "c"]
    assert loop.pending() == 0


def test_run_until_stops_early_and_never_goes_back() -> None:
    loop = EventLoop()
    hits: list[int] = []
    for t in range(10):
        loop.at(t, hits.append, t)
    loop.run_until(100, stop=lambda: len(hits) == 3)
    assert hits == [0, 1, 2]
    assert loop.now == 2
    loop.at(0, hits.append, -1)  # in the past: runs now, not before
    loop.run_until(2)
    assert hits[-1] == -1


def test_sub_rngs_are_stable_and_independent() -> None:
    assert sub_rng(1, "net").random() == sub_rng(1, "net").random()
    assert sub_rng(1, "net").random() != sub_rng(1, "disk").random()
    assert sub_rng(1, "net").random() != sub_rng(2, "net").random()


def test_trace_only_when_enabled() -> None:
    loop = EventLoop(trace=False)
    loop.trace.log("x")
    assert loop.trace.lines == []
    loop = EventLoop(trace=True)
    loop.now = 42
    loop.trace.log("x")
    assert loop.trace.lines == ["     42 x"]


# ---------------------------------------------------------------- network


def _net(opts: NetOptions, up: set[int] | None = None, seed: int = 0):  # type: ignore[no-untyped-def]
    loop = EventLoop()
    got: list[tuple[int, Message]] = []
    dropped: list[tuple[Message, str]] = []
    alive = up if up is not None else {1, 2, 3}
    net = Network(
        loop, sub_rng(seed, "net"), opts, [1, 2, 3],
        lambda m: got.append((loop.now, m)), lambda n: n in alive,
        lambda m, why: dropped.append((m, why)),
    )  # fmt: skip
    return loop, net, got, dropped


def _msg(frm: int, to: int, i: int = 0) -> Message:
    return Message(MessageType.HEARTBEAT, to, frm, term=1, commit=i)


def test_network_delivers_with_delay_and_reorders() -> None:
    loop, net, got, _ = _net(NetOptions(min_delay=1, mean_delay=10, link_variance=False))
    for i in range(200):
        net.send(_msg(1, 2, i))
    loop.run_until(10_000)
    assert len(got) == 200
    assert all(t >= 1 for t, _ in got)
    order = [m.commit for _, m in got]
    assert order != sorted(order)  # some overtook others


def test_network_loss_and_duplication() -> None:
    loop, net, got, dropped = _net(NetOptions(loss=0.3, dup=0.3, link_variance=False))
    for i in range(1000):
        net.send(_msg(1, 2, i))
    loop.run_until(10_000)
    assert 200 < net.stats.lost < 400
    assert 150 < net.stats.duplicated < 300
    assert len(got) == 1000 - net.stats.lost + net.stats.duplicated
    assert all(why == "lost" for _, why in dropped)
    net.calm()
    before = len(got)
    for i in range(100):
        net.send(_msg(1, 2, i))
    loop.run_until(20_000)
    assert len(got) - before == 100


def test_partitions_block_directed_links_and_heal() -> None:
    loop, net, got, dropped = _net(NetOptions(min_delay=1, mean_delay=1))
    net.isolate(1, [1, 2, 3], inbound=True, outbound=False)  # 1 hears nobody, can talk
    for a, b in ((1, 2), (2, 1), (3, 1), (2, 3)):
        net.send(_msg(a, b))
    loop.run_until(100)
    assert sorted((m.frm, m.to) for _, m in got) == [(1, 2), (2, 3)]
    assert {why for _, why in dropped} == {"partitioned"}
    net.heal()
    net.split([[1], [2, 3]], symmetric=False)  # 1 -> {2,3} cut, {2,3} -> 1 open
    got.clear()
    for a, b in ((1, 2), (2, 1), (3, 2)):
        net.send(_msg(a, b))
    loop.run_until(200)
    assert sorted((m.frm, m.to) for _, m in got) == [(2, 1), (3, 2)]
    assert net.describe_partition() == "1->2,1->3"


def test_messages_to_down_nodes_vanish() -> None:
    loop, net, got, dropped = _net(NetOptions(), up={1, 2})
    net.send(_msg(1, 3))
    net.send(_msg(1, 2))
    loop.run_until(1000)
    assert [m.to for _, m in got] == [2]
    assert dropped[0][1] == "destination down"


# ---------------------------------------------------------------- disk


def _e(term: int, index: int, data: bytes = b"") -> Entry:
    return Entry(term, index, data=data)


def test_disk_fsync_promotes_and_crash_discards() -> None:
    d = Disk()
    d.write_entries([_e(1, 1), _e(1, 2)])
    d.write_hard_state(HardState(1, 1, 2))
    assert d.durable.last_index() == 0
    d.fsync()
    assert d.durable.last_index() == 2 and d.durable.hard_state == HardState(1, 1, 2)
    d.write_entries([_e(2, 3)])
    d.write_hard_state(HardState(2, 0, 2))
    assert d.volatile().last_index() == 3
    assert d.crash() == 2
    assert d.durable.last_index() == 2 and d.durable.hard_state.term == 1


def test_disk_torn_crash_keeps_a_prefix() -> None:
    kept = set()
    for seed in range(30):
        d = Disk()
        for i in range(1, 5):
            d.write_entries([_e(1, i)])
        d.crash(sub_rng(seed, "disk"), torn=True)
        last = d.durable.last_index()
        assert [e.index for e in d.durable.entries] == list(range(1, last + 1))
        kept.add(last)
    assert len(kept) > 2


def test_disk_entries_replace_suffix_and_gaps_fail() -> None:
    d = Disk()
    d.write_entries([_e(1, 1), _e(1, 2), _e(1, 3)])
    d.write_entries([_e(2, 2)])
    d.fsync()
    assert [(e.term, e.index) for e in d.durable.entries] == [(1, 1), (2, 2)]
    with pytest.raises(DiskError):
        d.write_entries([_e(2, 5)])


def test_disk_snapshots_and_restore() -> None:
    cs = ConfState((1, 2, 3))
    d = Disk()
    d.write_entries([_e(1, i) for i in range(1, 8)])
    d.write_snapshot(Snapshot(SnapshotMetadata(4, 1, cs), b"kv"), keep_log=True)
    d.write_hard_state(HardState(3, 2, 7))
    d.fsync()
    assert d.durable.snap_index == 4
    assert [e.index for e in d.durable.entries] == [5, 6, 7]
    st, rec, seqs = d.restore()
    hs, snap = rec.hard_state, rec.snapshot
    assert hs == HardState(3, 2, 7)
    assert sorted(seqs) == list(range(1, 8))
    assert snap is not None and snap.data == b"kv"
    assert (st.first_index(), st.last_index()) == (5, 7)
    assert st.initial_state() == (hs, cs)
    # a snapshot from the leader replaces the whole log
    d.write_snapshot(Snapshot(SnapshotMetadata(10, 2, cs), b"kv2"), keep_log=False)
    d.fsync()
    assert d.durable.entries == [] and d.durable.last_index() == 10


# ---------------------------------------------------------------- applier


def test_kv_revisions_cas_and_dedup() -> None:
    kv = KVStore()
    r1 = kv.apply(Request(1, "put", "a", "x"))
    assert r1.revision == INITIAL_REVISION + 1
    assert kv.apply(Request(2, "cas", "a", "y", "nope")).succeeded is False
    assert kv.revision == r1.revision
    r3 = kv.apply(Request(3, "cas", "a", "y", "x"))
    assert r3.succeeded is True and r3.revision == r1.revision + 1
    assert kv.apply(Request(4, "get", "a")).value == "y"
    assert kv.apply(Request(5, "cas", "b", "z", None)).succeeded is True  # create
    assert kv.apply(Request(1, "put", "a", "x")) == r1  # duplicate: no effect
    assert kv.data["a"] == "y"
    clone = KVStore.decode(kv.encode())
    assert (clone.data, clone.revision, clone.applied_ids) == (kv.data, kv.revision, kv.applied_ids)
    assert Request.decode(Request(9, "cas", "k", "v", None).encode()) == Request(
        9, "cas", "k", "v", None
    )
    loose = KVStore(dedup=False)
    loose.apply(Request(1, "put", "a", "x"))
    loose.apply(Request(1, "put", "a", "x"))
    assert loose.revision == INITIAL_REVISION + 2


# ---------------------------------------------------------------- invariants


def _booted(inv: Invariants, *nodes: int) -> None:
    snap = Snapshot(SnapshotMetadata(1, 1, ConfState((1, 2, 3))))
    for n in nodes:
        inv.new_node(n)
        inv.on_persist(n, snap, [])


def test_election_safety() -> None:
    inv = Invariants()
    _booted(inv, 1, 2)
    inv.on_role(1, True, 2)
    inv.on_role(1, False, 2)
    with pytest.raises(Violation, match="both lead term 2"):
        inv.on_role(2, True, 2)


def test_log_matching() -> None:
    inv = Invariants()
    _booted(inv, 1, 2)
    inv.on_persist(1, None, [_e(2, 2, b"a"), _e(2, 3, b"b")])
    inv.on_persist(2, None, [_e(2, 2, b"a")])
    with pytest.raises(Violation, match="log matching"):
        inv.on_persist(2, None, [_e(2, 3, b"other")])


def test_leader_append_only() -> None:
    inv = Invariants()
    _booted(inv, 1)
    inv.on_persist(1, None, [_e(2, 2), _e(2, 3)])
    inv.on_role(1, True, 2)
    inv.on_persist(1, None, [_e(2, 4)])
    with pytest.raises(Violation, match="append-only"):
        inv.on_persist(1, None, [_e(2, 3, b"rewritten")])


def test_state_machine_safety_and_leader_completeness() -> None:
    inv = Invariants()
    _booted(inv, 1, 2, 3)
    inv.on_persist(1, None, [_e(2, 2, b"a")])
    inv.on_apply(1, _e(2, 2, b"a"))
    inv.on_persist(2, None, [_e(3, 2, b"b")])
    with pytest.raises(Violation, match="state machine safety"):
        inv.on_apply(2, _e(3, 2, b"b"))
    with pytest.raises(Violation, match="leader completeness"):
        inv.on_role(2, True, 3)
    inv.on_persist(3, None, [_e(2, 2, b"a")])
    inv.on_role(3, True, 4)  # has the committed entry: fine
    with pytest.raises(Violation, match="not in its persisted log"):
        inv.on_apply(3, _e(2, 3, b"c"))


def test_leader_completeness_binds_only_leaders_of_later_terms() -> None:
    """A candidate of term 3 can win with a vote delayed past the commit of a term-4
    entry (sweep seed 216428): Raft does not require it to hold that entry, but a leader
    of term 5 must."""
    inv = Invariants()
    _booted(inv, 1, 2, 3)
    inv.on_persist(1, None, [_e(4, 2, b"a")])
    inv.on_apply(1, _e(4, 2, b"a"))
    inv.on_role(2, True, 3)  # stale term: fine
    with pytest.raises(Violation, match="leader completeness"):
        inv.on_role(3, True, 5)


def test_durability_of_term_and_vote() -> None:
    inv = Invariants()
    vote = Message(MessageType.VOTE_RESP, 2, 1, term=5)
    inv.on_send_after_persist(1, HardState(5, 2, 0), [vote])
    inv.on_restart(1, HardState(5, 2, 0))
    inv.on_restart(1, HardState(6, 0, 0))  # moved on: fine
    with pytest.raises(Violation, match="voted for 2 in term 5"):
        inv.on_restart(1, HardState(5, 0, 0))
    with pytest.raises(Violation, match="promised term 5"):
        inv.on_restart(1, HardState(4, 0, 0))
    # pre-votes promise nothing
    inv.on_send_after_persist(
        3, HardState(1, 0, 0), [Message(MessageType.PRE_VOTE_RESP, 2, 3, term=9)]
    )
    inv.on_restart(3, HardState(1, 0, 0))


def test_acked_writes_must_be_in_the_leader_log() -> None:
    inv = Invariants()
    _booted(inv, 1, 2)
    inv.on_persist(1, None, [_e(2, 2, b"w")])
    inv.on_apply(1, _e(2, 2, b"w"))
    inv.on_ack(2)
    inv.check_acked_in(1)
    assert inv.committed[1] == (1, BOOT_HASH)
    with pytest.raises(Violation, match="acknowledged write"):
        inv.check_acked_in(2)


def test_options_are_a_function_of_the_seed() -> None:
    assert draw_options(5) == draw_options(5)
    assert draw_options(5) != draw_options(6)
    assert "seed=5" in draw_options(5).describe()


def test_disk_release_keeps_what_a_restart_needs_and_a_wrong_release_is_a_gap() -> None:
    cs = ConfState((1, 2, 3))
    d = Disk()
    seqs = d.write_entries([_e(1, i) for i in range(1, 6)])
    d.write_hard_state(HardState(1, 1, 5))
    d.fsync()
    d.write_snapshot(Snapshot(SnapshotMetadata(3, 1, cs), b"kv"), keep_log=True)
    d.cut()  # the new segment starts with the latest hard state
    more = d.write_entries([_e(1, 6)])
    d.fsync()
    # the release point of a snapshot at 3: the record of entry 4 (still needed)
    assert d.release_before(seqs[4]) == 0 and len(d.segments) == 2
    _, rec, _ = d.restore()
    assert [e.index for e in rec.entries] == [4, 5, 6] and rec.hard_state.commit == 5
    # releasing everything before the newest record loses 4 and 5: the restart refuses
    assert d.release_before(more[6]) == 1
    with pytest.raises(LogGap):
        d.restore()
