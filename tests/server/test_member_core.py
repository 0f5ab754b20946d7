"""The member's decisions without I/O (coord.server.member_core)."""

from __future__ import annotations

import random

from coord.raft import Entry
from coord.server.member_core import (
    EarlyCampaign,
    ReadBatcher,
    split_committed,
)


class _Core:
    """The few RawNode members the decisions use."""

    def __init__(self, lead: int = 0, term: int = 1) -> None:
        self.lead, self.term = lead, term
        self.follower_without_leader = lead == 0
        self.contexts: list[bytes] = []
        self.campaigns = 0

    def read_index(self, ctx: bytes) -> None:
        self.contexts.append(ctx)

    def forget_leader(self) -> None:
        self.lead = 0
        self.follower_without_leader = True

    def campaign(self) -> None:
        self.campaigns += 1


def test_a_restarted_member_never_reuses_a_read_context() -> None:
    """The leader ignores a ReadIndex whose context it still has pending and answers the
    old one: a context reused by the next process of the same member would be answered
    with a read index fixed before that process's read began."""
    core = _Core(lead=1)
    seen = set()
    for nonce in (1, 2):  # two processes of member 3
        reads: ReadBatcher[str] = ReadBatcher(3, 1.0, nonce=nonce)
        reads.add("read")
        assert reads.issue(core, 0.0)  # type: ignore[arg-type]
        seen.add(core.contexts[-1])
    assert len(seen) == 2


def test_a_read_answer_goes_to_the_reads_it_was_issued_for() -> None:
    core = _Core(lead=1)
    reads: ReadBatcher[str] = ReadBatcher(3, 1.0, nonce=7)
    reads.add("a")
    reads.add("b")
    assert reads.issue(core, 0.0)  # type: ignore[arg-type]
    reads.add("c")  # waits: one ReadIndex in flight
    assert not reads.issue(core, 0.1)  # type: ignore[arg-type]
    first = core.contexts[-1]
    assert reads.done(b"3/7/99") == []  # not the one in flight
    assert reads.done(first) == ["a", "b"]
    assert reads.issue(core, 0.2)  # type: ignore[arg-type]
    reads.leader_changed()  # in flight to a leader that is gone: queued again
    assert reads.check(core, 0.3)  # type: ignore[arg-type]
    assert reads.done(core.contexts[-1]) == ["c"]


def test_an_unanswered_read_is_issued_again_after_the_timeout() -> None:
    core = _Core(lead=1)
    reads: ReadBatcher[str] = ReadBatcher(3, 1.0, nonce=1)
    reads.add("a")
    assert reads.issue(core, 0.0)  # type: ignore[arg-type]
    assert not reads.check(core, 1.0)  # type: ignore[arg-type]
    assert reads.check(core, 1.5)  # type: ignore[arg-type]
    assert len(set(core.contexts)) == 2


def test_early_campaign_confirms_then_campaigns_unless_the_leader_is_heard() -> None:
    core = _Core(lead=2, term=5)
    ec = EarlyCampaign(lambda: core, 0.1, random.Random(1))  # type: ignore[arg-type, return-value]
    due = ec.stream_lost(2, 10.0)
    assert due is not None and abs(due - 10.3) < 1e-9
    assert ec.fire(due, lambda peer: 10.2) == []  # heard after the loss: a live leader
    assert core.lead == 2 and ec.forgotten == 0
    due = ec.stream_lost(2, 11.0)
    assert due is not None
    wakes = ec.fire(due, lambda peer: 10.2)
    assert core.lead == 0 and ec.forgotten == 1 and len(wakes) == 1
    assert due <= wakes[0] <= due + 0.4
    ec.fire(wakes[0], lambda peer: 0.0)
    assert core.campaigns == 1


def test_early_campaign_stays_quiet_once_a_leader_is_back() -> None:
    core = _Core(lead=2, term=5)
    ec = EarlyCampaign(lambda: core, 0.1, random.Random(1))  # type: ignore[arg-type, return-value]
    wake = ec.leader_gone(0.0)
    assert wake is not None
    core.lead, core.follower_without_leader = 3, False  # elected meanwhile
    ec.fire(wake, lambda peer: 0.0)
    assert core.campaigns == 0


def test_only_entries_held_durably_before_the_ready_apply_during_its_write() -> None:
    ents = [Entry(1, i) for i in range(5, 10)]
    early, rest = split_committed(ents, 7, [Entry(1, 7), Entry(1, 8)], False)
    assert [e.index for e in early] == [5, 6] and [e.index for e in rest] == [7, 8, 9]
    early, rest = split_committed(ents, 9, [], True)  # a snapshot: nothing early
    assert list(early) == [] and [e.index for e in rest] == [5, 6, 7, 8, 9]
