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
    ``trigger``, ``kill``."""
    worker: str = ""
    length: float = 0.0
    job: str = ""


@dataclass
class Options:
    seed: int
    workers: list[str] = field(default_factory=list)
    skew: dict[str, float] = field(default_factory=dict)
    jobs: list[JobPlan] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    session_ttl: int = 3
    duration: float = 40.0
    """Simulated seconds of faults and load; then everything heals and settles."""
    settle: float = 12.0


def draw(seed: int) -> Options:
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
    return o
