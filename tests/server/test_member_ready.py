"""A member's Ready handling as actions (coord.server.member_ready), on a real core."""

from __future__ import annotations

import random

from coord.raft import Config, ConfState, Entry, HardState, MemoryStorage, RawNode, StateRole
from coord.server.member_ready import (
    Apply,
    MemberCore,
    Persist,
    Send,
    SoftState,
    restore_storage,
)


def _leader() -> MemberCore:
    """A one-voter member that elected itself, its elections' Readys handled."""
    storage = MemoryStorage()
    rn = RawNode(Config(id=1, rng=random.Random(1), election_tick=10, heartbeat_tick=1),
                 storage)
    rn.bootstrap([1])
    core = MemberCore(rn, storage)
    rn.campaign()
    while (actions := core.ready()) is not None:
        for a in actions:
            if isinstance(a, Persist):
                core.persisted(a)
        core.advance()
    assert rn.role == StateRole.LEADER
    return core


def test_a_ready_becomes_ordered_actions_and_one_at_a_time() -> None:
    core = _leader()
    core.rn.propose(b"x")
    actions = core.ready()
    assert actions is not None
    kinds = [type(a) for a in actions]
    assert Apply not in kinds, "its own entry commits only once it is durable"
    persist = next(a for a in actions if isinstance(a, Persist))
    assert [e.data for e in persist.entries] == [b"x"]
    assert core.ready() is None, "the next Ready waits for advance"
    core.persisted(persist)
    assert core.durable_index == persist.entries[-1].index
    assert core.storage.last_index() == persist.entries[-1].index
    core.advance()
    # the entry commits once durable: the next Ready applies it, not during a write
    actions = core.ready()
    assert actions is not None
    applies = [a for a in actions if isinstance(a, Apply)]
    assert [e.data for a in applies for e in a.entries] == [b"x"]


def test_entries_held_durably_apply_during_the_write_of_the_next() -> None:
    core = _leader()
    core.rn.propose(b"a")
    first = core.ready()
    assert first is not None
    for a in first:
        if isinstance(a, Persist):
            core.persisted(a)
    core.advance()
    core.rn.propose(b"b")
    actions = core.ready()
    assert actions is not None
    kinds = [type(a) for a in actions]
    during = [a for a in actions if isinstance(a, Apply) and a.during_write]
    assert [e.data for a in during for e in a.entries] == [b"a"]
    assert kinds.index(Persist) < kinds.index(Apply)


def test_a_new_leader_reports_soft_state_before_sending() -> None:
    storage = MemoryStorage()
    rn = RawNode(Config(id=1, rng=random.Random(1), election_tick=10, heartbeat_tick=1),
                 storage)
    rn.bootstrap([1, 2, 3])
    core = MemberCore(rn, storage)
    rn.campaign()
    actions = core.ready()
    assert actions is not None
    kinds = [type(a) for a in actions]
    assert kinds[0] is SoftState
    assert any(isinstance(a, Send) for a in actions)


def test_restore_storage_rebuilds_the_mirror_with_commit_at_least_the_snapshot() -> None:
    source = MemoryStorage()
    source.append([Entry(1, i) for i in range(1, 6)])
    snap = source.create_snapshot(3, ConfState(voters=(1,)), b"state")
    storage = MemoryStorage()
    hs = restore_storage(storage, snap, [Entry(1, 4), Entry(1, 5)], HardState(1, 1, 0))
    assert hs == HardState(1, 1, 3)
    assert (storage.first_index(), storage.last_index()) == (4, 5)
