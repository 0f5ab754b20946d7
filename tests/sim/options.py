"""Swarm options: every seed draws its own fault mix and cluster shape.

As in TigerBeetle's VOPR, one seed decides everything: :func:`draw_options` derives the
options from ``sub_rng(seed, "options")`` so they print with a failure and replay with the
seed. Some seeds are calm, some brutal; each knob is sometimes off, so bugs that need one
fault *and not another* are reachable too.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tests.sim.eventloop import sub_rng

#: Named crash points of the sim's Ready driver (see cluster.py).
CRASH_POINTS = (
    "before_persist",  # nothing of this Ready written
    "before_fsync",  # written, not yet durable
    "after_persist",  # durable, nothing sent
    "after_send",  # messages sent, nothing applied
    "mid_apply",  # some committed entries applied
    "before_advance",  # all applied, advance() not called
)

#: Driver / disk bugs the simulator can inject into itself (bug-injection tests).
SIM_BUGS = frozenset(
    {
        "forget_vote",  # persist the HardState without the vote
        "ack_before_fsync",  # send messages_after_persist before persisting/fsync
        "no_dedup",  # the applier applies a duplicated proposal twice
        "stale_local_read",  # serve reads from the local node's state, no Raft
        "release_to_newest",  # a snapshot releases the WAL up to its newest record
    }
)


@dataclass(frozen=True)
class SimOptions:
    seed: int
    voters: int = 3
    spares: int = 0  # extra node ids added (as learner, then promoted) during the run
    removals: int = 0  # voters removed during the run (never below 3 voters)
    demotions: int = 0  # voters demoted to learner (and promoted back) during the run
    clients: int = 3
    keys: int = 2
    tick_ms: int = 10
    election_tick: int = 10
    heartbeat_tick: int = 2
    pre_vote: bool = True
    check_quorum: bool = True
    max_size_per_msg: int = 1 << 20
    max_inflight: int = 256
    max_inflight_bytes: int = 0
    max_committed_size_per_ready: int = 1 << 22
    batch_ms: int = 0  # proposals wait up to this long at a node, then one propose_many
    disk_latency: int = 0  # a Ready stays outstanding 1..this ms (steps go on meanwhile)
    loss: float = 0.0
    dup: float = 0.0
    min_delay: int = 1
    mean_delay: float = 4.0
    partition_every: int = 0  # mean ms between partitions (0 = none)
    partition_len: int = 300  # mean ms a partition lasts
    asymmetric: bool = False
    crash_every: int = 0  # mean ms between node crashes (0 = none)
    target_leader: float = 0.0  # chance a crash / isolation hits the current leader
    churn_every: int = 0  # mean ms between "cut off the leader, let it append, kill it"
    transfer_every: int = 0  # mean ms between leadership transfer requests
    early_campaign: bool = False  # followers of a crashed leader forget it and campaign early
    false_alarm_every: int = 0  # mean ms between a follower wrongly forgetting a live leader
    down_ms: int = 200  # mean downtime of a crashed node
    crash_points: tuple[str, ...] = ()
    crash_point_p: float = 0.0
    torn_writes: bool = False
    snapshot_every: int = 0  # applied entries between snapshots (0 = never)
    snapshot_keep: int = 0  # entries kept behind a snapshot on compaction
    snapshot_crash: bool = False  # a snapshot save may crash before the WAL release
    read_index: bool = False  # serve gets via ReadIndex instead of through the log
    lease_reads: bool = False  # ReadIndex trusts the leader lease (needs check_quorum)
    tick_skew: float = 0.0  # each node's tick period is tick_ms * (1 ± up to this)
    think_ms: int = 20  # mean client pause between ops
    max_ops: int = 250  # client ops per run (keeps a seed cheap and its history small)
    client_timeout: int = 600
    safety_ms: int = 1500
    liveness_ms: int = 3000
    bugs: frozenset[str] = field(default_factory=frozenset)  # Config.bugs (core)
    sim_bugs: frozenset[str] = field(default_factory=frozenset)

    def describe(self) -> str:
        d = asdict(self)
        d["bugs"] = sorted(self.bugs)
        d["sim_bugs"] = sorted(self.sim_bugs)
        return " ".join(f"{k}={v}" for k, v in d.items())

    def with_bugs(self, bugs: frozenset[str], sim_bugs: frozenset[str]) -> SimOptions:
        return replace(self, bugs=bugs, sim_bugs=sim_bugs)


def draw_options(seed: int) -> SimOptions:
    """The swarm: one in five seeds is *hostile* (constant leader churn, one entry per
    message), the rest draw every knob independently."""
    r = sub_rng(seed, "options")
    if r.random() < 0.2:
        return _hostile(seed, r)
    return _swarm(seed, r)


def _hostile(seed: int, r: random.Random) -> SimOptions:
    """Leaders die or get cut off every few hundred ms while clients keep writing, and
    replication moves one entry per message: logs diverge and old-term entries linger
    on minorities (the ground on which Raft's commit and election rules matter)."""
    return SimOptions(
        seed=seed,
        voters=r.choice((3, 5)),
        clients=r.randint(3, 5),
        keys=1,
        election_tick=r.choice((5, 10)),
        heartbeat_tick=1,
        pre_vote=r.random() < 0.3,
        check_quorum=r.random() < 0.3,
        max_size_per_msg=1,
        max_inflight=r.choice((1, 2, 256)),
        loss=r.choice((0.05, 0.15, 0.3)),
        dup=r.choice((0.0, 0.05)),
        min_delay=1,
        mean_delay=r.choice((2.0, 5.0, 10.0)),
        partition_every=r.choice((100, 200)),
        partition_len=r.choice((50, 150)),
        asymmetric=r.random() < 0.3,
        crash_every=r.choice((80, 150, 300)),
        churn_every=r.choice((0, 60, 120)),
        target_leader=r.choice((0.5, 0.9)),
        down_ms=r.choice((20, 80, 200)),
        crash_points=("after_persist", "after_send", "before_advance"),
        crash_point_p=r.choice((0.005, 0.02)),
        torn_writes=r.random() < 0.5,
        snapshot_every=r.choice((0, 0, 5)),
        read_index=r.random() < 0.3,
        think_ms=2,
        client_timeout=300,
        safety_ms=r.choice((1500, 2500)),
        liveness_ms=4000,
        # drawn last, so adding them kept every earlier option of every seed unchanged
        early_campaign=r.random() < 0.5,
        false_alarm_every=r.choice((0, 0, 200)),
    )


def figure8_options(seed: int) -> SimOptions:
    """The harshest leader churn, for hunting commit-rule bugs (Raft paper, Figure 8):
    leaders are cut off while they append, then killed; replication moves one entry per
    message over a lossy network; elections are fast and unguarded (no pre-vote, no
    check-quorum), so a stale leader can come back and win."""
    r = sub_rng(seed, "figure8")
    return SimOptions(
        seed=seed,
        voters=r.choice((3, 5)),
        clients=4,
        keys=1,
        election_tick=5,
        heartbeat_tick=1,
        pre_vote=False,
        check_quorum=False,
        max_size_per_msg=1,
        max_inflight=r.choice((1, 256)),
        loss=r.choice((0.1, 0.3)),
        min_delay=1,
        mean_delay=3.0,
        partition_every=100,
        partition_len=60,
        crash_every=r.choice((40, 80)),
        churn_every=r.choice((60, 120)),
        target_leader=0.9,
        down_ms=r.choice((10, 30)),
        crash_points=("after_send", "before_advance", "after_persist"),
        crash_point_p=0.02,
        think_ms=2,
        client_timeout=300,
        safety_ms=2000,
        liveness_ms=3000,
    )


def _swarm(seed: int, r: random.Random) -> SimOptions:

    def maybe(p: float) -> bool:
        return r.random() < p

    voters = r.choice((3, 3, 3, 5))
    membership = maybe(0.3)
    spares = r.choice((1, 2)) if membership else 0
    removals = r.choice((0, 1, 1)) if membership else 0
    election_tick = r.choice((5, 10, 10, 20))
    heartbeat_tick = r.choice((1, 2, 3)) if election_tick > 5 else 1
    crash_points = tuple(p for p in CRASH_POINTS if maybe(0.3)) if maybe(0.5) else ()
    return SimOptions(
        seed=seed,
        voters=voters,
        spares=spares,
        removals=removals,
        clients=r.randint(1, 5),
        keys=r.choice((1, 1, 2, 3)),
        tick_ms=10,
        election_tick=election_tick,
        heartbeat_tick=heartbeat_tick,
        pre_vote=maybe(0.7),
        check_quorum=maybe(0.7),
        max_size_per_msg=r.choice((1 << 20, 1 << 20, 256, 1)),
        max_inflight=r.choice((256, 256, 4, 1)),
        loss=r.choice((0.0, 0.0, 0.02, 0.1, 0.25)),
        dup=r.choice((0.0, 0.0, 0.05, 0.2)),
        min_delay=r.choice((0, 1, 2)),
        mean_delay=r.choice((1.0, 3.0, 8.0, 25.0)),
        partition_every=r.choice((0, 0, 200, 500, 1000)),
        partition_len=r.choice((50, 200, 600)),
        asymmetric=maybe(0.3),
        crash_every=r.choice((0, 0, 150, 400, 1000)),
        target_leader=r.choice((0.0, 0.0, 0.5)),
        transfer_every=r.choice((0, 0, 300)),
        down_ms=r.choice((10, 100, 400)),
        crash_points=crash_points,
        crash_point_p=r.choice((0.002, 0.01, 0.03)) if crash_points else 0.0,
        torn_writes=maybe(0.5),
        snapshot_every=r.choice((0, 0, 3, 10, 30)),
        snapshot_keep=r.choice((0, 0, 2, 5)),
        read_index=maybe(0.4),
        think_ms=r.choice((5, 10, 30)),
        max_ops=r.choice((100, 250)),
        client_timeout=r.choice((200, 600, 1500)),
        safety_ms=r.choice((800, 1200, 1800)),
        liveness_ms=4000,
        # drawn last, so adding them kept every earlier option of every seed unchanged
        **_clock(r, maybe),
    )


def _clock(r: random.Random, maybe: Callable[[float], bool]) -> dict[str, Any]:
    """Knobs added later: clock skew between nodes, or (only without skew: leases assume
    bounded drift) lease-based ReadIndex; voter demotions; batched proposals
    (``propose_many``); a byte bound on in-flight replication; a Ready outstanding while
    the node keeps stepping (disk latency); small committed batches per Ready; the server's
    early campaign (``forget_leader`` when the leader's stream breaks), with false alarms."""
    skew = r.choice((0.0, 0.0, 0.1, 0.3))
    lease = maybe(0.3) if skew == 0.0 else False
    demotions = r.choice((0, 0, 0, 1, 2))
    return {
        "tick_skew": skew,
        "lease_reads": lease,
        "demotions": demotions,
        "batch_ms": r.choice((0, 0, 2, 10)),
        "max_inflight_bytes": r.choice((0, 0, 0, 300)),
        "disk_latency": r.choice((0, 0, 2, 8)),
        "max_committed_size_per_ready": r.choice((1 << 22, 1 << 22, 100)),
        "early_campaign": maybe(0.5),
        "false_alarm_every": r.choice((0, 0, 300, 1000)),
        "snapshot_crash": maybe(0.3),
    }
