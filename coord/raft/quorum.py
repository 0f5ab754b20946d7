"""Majority maths, pure: the commit index of a voter set and the outcome of a vote.

A configuration here is a single majority (this core changes membership one server at a
time, so joint configurations never occur; see ``coord.raft`` module docs).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from enum import IntEnum


class VoteResult(IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


def majority(n: int) -> int:
    """The smallest number of voters that forms a quorum of ``n``."""
    return n // 2 + 1


def committed_index(voters: Collection[int], acked: Callable[[int], int | None]) -> int:
    """The largest index acknowledged by a quorum of ``voters`` (0 if there are none).

    ``acked(id)`` is the highest index known durable on ``id`` (None = nothing known).
    Equivalently: sort the acked indexes descending and take the majority-th one.
    """
    n = len(voters)
    if n == 0:
        return 0
    srt = sorted((acked(v) or 0 for v in voters), reverse=True)
    return srt[majority(n) - 1]


def vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """WON once a quorum granted, LOST once a quorum can no longer be reached.
    An empty configuration wins by convention (nothing to ask)."""
    if not voters:
        return VoteResult.WON
    granted = rejected = 0
    for v in voters:
        got = votes.get(v)
        if got is True:
            granted += 1
        elif got is False:
            rejected += 1
    q = majority(len(voters))
    if granted >= q:
        return VoteResult.WON
    if len(voters) - rejected >= q:
        return VoteResult.PENDING
    return VoteResult.LOST
