"""Throughput of the Raft core alone: an in-memory 3- and 5-node cluster, no faults.

The leader proposes ``batch`` entries at a time (one ``propose_many`` call); the loop then
runs every node's Ready through the contract (persist into MemoryStorage, send, apply,
advance) and delivers every message, until the batch is committed on the leader. The
figure is proposals committed per CPU second of this process (and, less robustly on a
shared machine, per wall-clock second): the core's own cost, with no disk, no network
and no serialization. Each configuration runs ``--repeat`` times; the best run is kept.

Run: ``python -m bench.raft_throughput [--seconds 2] [--size 128]``
"""

from __future__ import annotations

import argparse
import random
import time
from collections import deque

from coord.raft import (
    ConfChange,
    Config,
    EntryType,
    MemoryStorage,
    Message,
    RawNode,
    StateRole,
)


class Cluster:
    def __init__(self, n: int) -> None:
        self.ids = list(range(1, n + 1))
        self.storage = {i: MemoryStorage() for i in self.ids}
        self.nodes = {
            i: RawNode(Config(id=i, rng=random.Random(i)), self.storage[i]) for i in self.ids
        }
        self.queue: deque[Message] = deque()
        self.applied = dict.fromkeys(self.ids, 0)
        for rn in self.nodes.values():
            rn.bootstrap(self.ids)
        self.pump()
        self.nodes[1].campaign()
        self.pump()
        assert self.nodes[1].role == StateRole.LEADER

    def handle_ready(self, nid: int) -> bool:
        rn = self.nodes[nid]
        if not rn.has_ready():
            return False
        rd = rn.ready()
        st = self.storage[nid]
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        self.queue.extend(rd.messages)
        self.queue.extend(rd.messages_after_persist)
        for e in rd.committed_entries:
            if e.type == EntryType.CONF_CHANGE:
                rn.apply_conf_change(ConfChange.decode(e.data))
            self.applied[nid] = e.index
        rn.advance(rd)
        return True

    def pump(self) -> None:
        busy = True
        while busy:
            busy = False
            for nid in self.ids:
                busy |= self.handle_ready(nid)
            while self.queue:
                busy = True
                m = self.queue.popleft()
                self.nodes[m.to].step(m)


def measure(n: int, batch: int, size: int, seconds: float) -> tuple[float, float]:
    """(proposals per CPU second, proposals per wall-clock second). CPU time (of this
    process) is the robust figure on a shared machine; wall-clock includes waiting."""
    c = Cluster(n)
    leader = c.nodes[1]
    payload = b"x" * size
    done = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while time.process_time() - cpu0 < seconds:
        target = leader.last_index() + batch
        leader.propose_many([payload] * batch)
        c.pump()
        assert c.applied[1] >= target
        done += batch
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    return done / cpu, done / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="CPU seconds per run")
    ap.add_argument("--size", type=int, default=128, help="bytes per proposal")
    ap.add_argument("--batches", default="1,16,128", help="proposals per batch")
    ap.add_argument("--repeat", type=int, default=3, help="runs per configuration (best kept)")
    args = ap.parse_args()
    print(f"calibration: a 1M-iteration Python loop takes {calibrate() * 1000:.0f} ms CPU here")
    print(f"{'nodes':>5} {'batch':>6} {'proposals/cpu-s':>16} {'proposals/wall-s':>17}")
    for n in (3, 5):
        for batch in (int(b) for b in args.batches.split(",")):
            runs = [measure(n, batch, args.size, args.seconds) for _ in range(args.repeat)]
            cpu_rate = max(r[0] for r in runs)
            wall_rate = max(r[1] for r in runs)
            print(f"{n:>5} {batch:>6} {cpu_rate:>16,.0f} {wall_rate:>17,.0f}")


def calibrate() -> float:
    """Seconds for a fixed pure-Python loop: scales the figures between machines/loads."""
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        x = 0
        for i in range(1_000_000):
            x += i
        best = min(best, time.process_time() - t)
    return best


if __name__ == "__main__":
    main()
