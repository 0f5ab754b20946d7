"""What one simulated run does, drawn from its seed (``SCHED_SEED=n`` reproduces it)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

CONCURRENCY = ("forbid", "forbid", "replace", "allow")
PERIODS = (2, 3, 4, 5)


@dataclass
class JobPlan:
    name: str
    period: int
    concurrency: str
    low: float
    high: float
    """Each run lasts uniform(low, high) simulated seconds."""
    fail: int
    """Percent of runs that exit 1."""
    retries: int
    on_lost: str

    def spec_json(self) -> str:
        return json.dumps({"name": self.name, "schedule": f"@every {self.period}s",
                           "command": f"sim {self.low} {self.high} {self.fail}",
                           "concurrency": self.concurrency, "retries": self.retries,
                           "retry_backoff": 1, "on_lost": self.on_lost})


@dataclass
class Fault:
    at: float
    kind: str
    """``crash`` (restart after ``length``), ``cut`` (the worker cannot reach the store
    for ``length``), ``outage`` (nobody can), ``compact`` (the store compacts to now), and
    an operator's requests on ``job``: ``suspend`` (resumed after ``length``),
    ``trigger``, ``kill``; ``slow`` (the worker's calls are delayed for ``length``, see
    ``store.Slow``) and ``apply`` (operator ``worker`` applies ``files[file]``)."""
    worker: str = ""
    length: float = 0.0
    job: str = ""
    delay_in: float = 0.0
    delay_out: float = 0.0
    scope: str = ""
    file: int = -1


@dataclass
class Options:
    seed: int
    workers: list[str] = field(default_factory=list)
    skew: dict[str, float] = field(default_factory=dict)
    jobs: list[JobPlan] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    session_ttl: int = 3
    files: list[list[JobPlan]] = field(default_factory=list)
    """Job files the ``apply`` operators apply with ``--prune``: each is ``jobs`` (unchanged)
    plus versions of the pool jobs (``APPLY_POOL``); the first is stored at the start."""
    duration: float = 40.0
    """Simulated seconds of faults and load; then everything heals and settles."""
    settle: float = 12.0


def draw(seed: int, extras: bool = True) -> Options:
    """``extras=False``: without the slow paths and the operators' applies (the layout
    before them, which the regression seeds of that time replay exactly)."""
    rng = random.Random(seed)
    o = Options(seed=seed)
    o.workers = [f"w{i}" for i in range(rng.choice((2, 3, 3)))]
    o.skew = {w: round(rng.uniform(-0.4, 0.4), 3) for w in o.workers}
    for i in range(rng.choice((2, 3, 4))):
        period = rng.choice(PERIODS)
        conc = rng.choice(CONCURRENCY)
        low = round(rng.uniform(0.05, period * 0.8), 2)
        high = round(low + rng.uniform(0.0, period * 1.2), 2)
        o.jobs.append(JobPlan(f"job{i}", period, conc, low, high,
                              fail=rng.choice((0, 0, 20)), retries=rng.choice((0, 0, 1)),
                              on_lost=rng.choice(("record", "record", "rerun"))))
    if extras:
        _draw_applies(seed, o)
    t = rng.uniform(3.0, 8.0)
    while t < o.duration - 6:
        kind = rng.choice(("crash", "crash", "cut", "cut", "outage", "compact", "suspend",
                           "trigger", "kill"))
        length = {"crash": rng.uniform(0.5, 6.0), "cut": rng.uniform(0.5, 6.0),
                  "outage": rng.uniform(0.2, 2.5), "suspend": rng.uniform(1.0, 8.0)
                  }.get(kind, 0.0)
        o.faults.append(Fault(round(t, 3), kind, rng.choice(o.workers), round(length, 3),
                              rng.choice(o.jobs).name))
        t += rng.uniform(1.5, 7.0)
    if extras:
        _draw_slow(seed, o)
    o.faults.sort(key=lambda f: f.at)
    return o


APPLY_POOL = ("app0", "app1", "app2")
"""Jobs that the ``apply`` operators add, change (schedule, policy) and delete."""


def _draw_slow(seed: int, o: Options) -> None:
    """Slow paths between a worker and the store, in half the seeds (their own random
    stream, so the other faults of a seed are those it always had)."""
    rng = random.Random(seed * 104_729 + 17)
    if rng.random() < 0.5:
        return
    for _ in range(rng.choice((1, 2, 3))):
        mode = rng.choice(("in", "out", "both"))
        o.faults.append(Fault(
            round(rng.uniform(3.0, o.duration - 8), 3), "slow", rng.choice(o.workers),
            round(rng.uniform(1.0, 8.0), 3),
            delay_in=round(rng.uniform(1.0, 6.0), 3) if mode != "out" else 0.0,
            delay_out=round(rng.uniform(1.0, 6.0), 3) if mode != "in" else 0.0,
            scope=rng.choice(("txn", "txn", "all"))))


def _draw_applies(seed: int, o: Options) -> None:
    """Two or three operators applying job files at once (half the seeds): files of
    overlapping pool jobs whose schedule and policy differ, some applied at the same
    instant by two operators."""
    rng = random.Random(seed * 15_485_863 + 29)
    if rng.random() < 0.5:
        return
    for _ in range(rng.choice((3, 4, 5))):
        pool = []
        for name in APPLY_POOL:
            if rng.random() < 0.3:
                continue  # not in this file: --prune deletes it
            period = rng.choice(PERIODS)
            low = round(rng.uniform(0.05, period * 0.6), 2)
            pool.append(JobPlan(name, period, rng.choice(("forbid", "replace", "allow")),
                                low, round(low + rng.uniform(0.0, period * 0.6), 2),
                                fail=0, retries=0, on_lost="record"))
        o.files.append(pool)
    for op in range(rng.choice((2, 3))):
        t = rng.uniform(3.0, 10.0)
        while t < o.duration - 6:
            o.faults.append(Fault(round(t, 3), "apply", f"op{op}",
                                  file=rng.randrange(1, len(o.files))))
            if rng.random() < 0.5:  # another operator, another file, at the same instant
                other = (o.faults[-1].file + rng.randrange(1, len(o.files))) % len(o.files)
                o.faults.append(Fault(round(t, 3), "apply", f"op{(op + 1) % 3}", file=other))
            t += rng.uniform(3.0, 12.0)
