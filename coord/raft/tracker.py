"""``ProgressTracker``: the current configuration (voters, learners), one ``Progress`` per
member and the votes of the current election.

Invariant: ``voters`` and ``learners`` are disjoint and ``progress`` has exactly their union
as keys (every member, including this node itself).
"""

from __future__ import annotations

from coord.raft.progress import Progress
from coord.raft.quorum import VoteResult, committed_index, vote_result
from coord.raft.types import ConfState


class ProgressTracker:
    def __init__(self, max_inflight: int, max_inflight_bytes: int = 0) -> None:
        self.max_inflight = max_inflight
        self.max_inflight_bytes = max_inflight_bytes
        self.voters: set[int] = set()
        self.learners: set[int] = set()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}

    def conf_state(self) -> ConfState:
        return ConfState(tuple(sorted(self.voters)), tuple(sorted(self.learners)))

    def is_voter(self, node_id: int) -> bool:
        return node_id in self.voters

    def is_singleton(self) -> bool:
        return len(self.voters) == 1

    def ids(self) -> list[int]:
        """All members in id order (deterministic iteration for message order)."""
        return sorted(self.progress)

    def add(self, node_id: int, next_index: int, learner: bool) -> None:
        pr = Progress(next_index, self.max_inflight, learner, self.max_inflight_bytes)
        # A new member is presumed active so that check-quorum does not count it against
        # the leader before it had a chance to answer.
        pr.recent_active = True
        self.progress[node_id] = pr
        (self.learners if learner else self.voters).add(node_id)

    def remove(self, node_id: int) -> None:
        self.progress.pop(node_id, None)
        self.voters.discard(node_id)
        self.learners.discard(node_id)

    def committed(self) -> int:
        def acked(v: int) -> int | None:
            pr = self.progress.get(v)
            return pr.match if pr is not None else None

        return committed_index(self.voters, acked)

    def quorum_active(self) -> bool:
        active = {v: self.progress[v].recent_active for v in self.voters if v in self.progress}
        return vote_result(self.voters, active) == VoteResult.WON

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node_id: int, granted: bool) -> None:
        self.votes.setdefault(node_id, granted)

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        granted = sum(1 for v in self.voters if self.votes.get(v) is True)
        rejected = sum(1 for v in self.voters if self.votes.get(v) is False)
        return granted, rejected, vote_result(self.voters, self.votes)
