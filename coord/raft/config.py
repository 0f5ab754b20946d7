"""Configuration of one Raft node.

Time is counted in ticks (the driver calls ``tick()``); randomness comes only from the
injected ``rng`` so that a seeded simulation replays exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import IntEnum

from coord.raft.errors import InvalidConfig

#: Names of deliberately broken behaviours (simulator bug-injection tests only).
KNOWN_BUGS = frozenset({"commit_old_term_by_count", "vote_for_shorter_log"})


class ReadOnlyOption(IntEnum):
    """SAFE confirms leadership with a heartbeat round per ReadIndex batch; LEASE_BASED
    trusts the leader lease (needs check_quorum and bounded clock drift)."""

    SAFE = 0
    LEASE_BASED = 1


@dataclass(slots=True)
class Config:
    """Parameters of one node.

    - ``election_tick``: followers campaign after a randomized timeout drawn from
      [election_tick, 2*election_tick - 1] ticks without hearing from a leader.
    - ``heartbeat_tick``: the leader heartbeats every this many ticks (< election_tick).
    - ``applied``: the last index already applied by the state machine (on restart).
    - ``max_size_per_msg``: soft byte limit of entries in one APP (at least one entry goes).
    - ``max_inflight_msgs``: APPs in flight to one follower in replicate state.
    - ``check_quorum``: the leader steps down if it has not heard from a quorum within an
      election timeout; followers ignore votes while they heard from a leader recently.
    - ``pre_vote``: campaign with a pre-vote round first (no term bump on failure).
    - ``max_committed_size_per_ready``: soft limit of committed entry bytes per Ready.
    - ``max_inflight_bytes``: also pause replication to a follower once this many entry
      bytes are unacknowledged (0 = no byte limit, only ``max_inflight_msgs``).
    - ``bugs``: names from ``KNOWN_BUGS``; never set outside tests.
    """

    id: int
    rng: random.Random
    election_tick: int = 10
    heartbeat_tick: int = 1
    applied: int = 0
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    check_quorum: bool = True
    pre_vote: bool = True
    read_only: ReadOnlyOption = ReadOnlyOption.SAFE
    max_committed_size_per_ready: int = 1 << 22
    max_inflight_bytes: int = 0
    bugs: frozenset[str] = field(default_factory=frozenset)

    def validate(self) -> None:
        if self.id <= 0:
            raise InvalidConfig("id must be positive (0 means 'no node')")
        if self.heartbeat_tick <= 0:
            raise InvalidConfig("heartbeat_tick must be positive")
        if self.election_tick <= self.heartbeat_tick:
            raise InvalidConfig("election_tick must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0:
            raise InvalidConfig("max_inflight_msgs must be positive")
        if self.max_size_per_msg <= 0 or self.max_committed_size_per_ready <= 0:
            raise InvalidConfig("size limits must be positive")
        if self.max_inflight_bytes < 0:
            raise InvalidConfig("max_inflight_bytes must not be negative")
        if self.applied < 0:
            raise InvalidConfig("applied must not be negative")
        if self.read_only == ReadOnlyOption.LEASE_BASED and not self.check_quorum:
            raise InvalidConfig("LEASE_BASED reads require check_quorum")
        unknown = set(self.bugs) - KNOWN_BUGS
        if unknown:
            raise InvalidConfig(f"unknown bugs: {sorted(unknown)}")
