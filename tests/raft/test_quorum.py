"""Majority maths against a deliberately naive oracle (as etcd-io/raft quorum/quick_test)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from coord.raft.quorum import VoteResult, committed_index, majority, vote_result

acks = st.dictionaries(st.integers(1, 9), st.integers(0, 50), max_size=9)


def naive_committed(voters: set[int], acked: dict[int, int]) -> int:
    """The largest index i such that a majority of voters acked >= i."""
    if not voters:
        return 0
    best = 0
    for i in range(0, 51):
        if sum(1 for v in voters if acked.get(v, 0) >= i) >= len(voters) // 2 + 1:
            best = i
    return best


@settings(max_examples=300, deadline=None)
@given(st.sets(st.integers(1, 9), max_size=9), acks)
def test_committed_index_matches_oracle(voters: set[int], acked: dict[int, int]) -> None:
    assert committed_index(voters, acked.get) == naive_committed(voters, acked)


def naive_vote(voters: set[int], votes: dict[int, bool]) -> VoteResult:
    yes = sum(1 for v in voters if votes.get(v) is True)
    undecided = sum(1 for v in voters if v not in votes)
    q = len(voters) // 2 + 1
    if yes >= q:
        return VoteResult.WON
    if yes + undecided >= q:
        return VoteResult.PENDING
    return VoteResult.LOST


@settings(max_examples=300, deadline=None)
@given(
    st.sets(st.integers(1, 9), min_size=1, max_size=9),
    st.dictionaries(st.integers(1, 12), st.booleans(), max_size=12),
)
def test_vote_result_matches_oracle(voters: set[int], votes: dict[int, bool]) -> None:
    assert vote_result(voters, votes) == naive_vote(voters, votes)


def test_edge_cases() -> None:
    assert majority(1) == 1 and majority(2) == 2 and majority(3) == 2 and majority(4) == 3
    assert committed_index(set(), {}.get) == 0
    assert vote_result(set(), {}) == VoteResult.WON
    # Votes from non-voters do not count.
    assert vote_result({1, 2, 3}, {4: True, 5: True}) == VoteResult.PENDING
    assert committed_index({1, 2, 3}, {1: 5, 2: 3}.get) == 3
