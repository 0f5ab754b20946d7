"""Seeded random runs of a small cluster (loss, reordering, partitions, crashes, compaction,
membership changes) checking Raft's safety properties after every step, and liveness once
the faults stop. A lightweight cousin of tests/sim; it exists to exercise the core alone.
"""

from __future__ import annotations

import contextlib
import random

import pytest

from coord.raft import ConfChange, ConfChangeType, ProposalDropped, RaftError, StateRole
from tests.raft.harness import Env, encode_sm


class Checker:
    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}  # term -> leader id
        self.applied: dict[int, bytes] = {}  # index -> data, across all nodes

    def check(self, env: Env) -> None:
        for nid, node in env.nodes.items():
            if node.crashed:
                continue
            r = node.rn._raft
            if r.state == StateRole.LEADER:
                prev = self.leaders.setdefault(r.term, nid)
                assert prev == nid, f"two leaders in term {r.term}: {prev} and {nid}"
            for i, d in node.applied:
                prev_d = self.applied.setdefault(i, d)
                assert prev_d == d, f"node {nid} applied {d!r} at {i}, another applied {prev_d!r}"
            idx = [i for i, _ in node.applied]
            assert idx == sorted(idx) and len(set(idx)) == len(idx)
        # Log matching on committed prefixes: same (index, term) -> same entries up to there.
        logs = {}
        for nid, node in env.nodes.items():
            if node.crashed:
                continue
            log = node.rn._raft.log
            logs[nid] = {e.index: (e.term, e.data) for e in log.all_entries()
                         if e.index <= log.committed}
        ids = sorted(logs)
        for a in ids:
            for b in ids:
                if a < b:
                    common = logs[a].keys() & logs[b].keys()
                    for i in common:
                        assert logs[a][i] == logs[b][i], f"nodes {a},{b} differ at {i}"


def run(seed: int, steps: int = 600) -> None:
    rng = random.Random(seed)
    env = Env()
    n = rng.choice([3, 5])
    env.add_nodes(n, voters=tuple(range(1, n + 1)), jitter=True,
                  max_inflight_msgs=rng.choice([1, 4, 256]),
                  max_size_per_msg=rng.choice([1, 1 << 20]),
                  max_inflight_bytes=rng.choice([0, 64]))
    for nid, node in env.nodes.items():
        node.config.rng.seed(seed * 100 + nid)
    chk = Checker()
    counter = 0
    spare = n + 1
    reads: dict[bytes, int] = {}
    for _ in range(steps):
        op = rng.random()
        alive = [i for i, nd in env.nodes.items() if not nd.crashed]
        nid = rng.choice(alive)
        if op < 0.35:
            env.tick(nid)
        elif op < 0.55:
            env.process_ready(nid)
        elif op < 0.75:
            # deliver a random subset, dropping some and reordering
            rng.shuffle(env.queue)
            keep = []
            for m in env.queue:
                if rng.random() < 0.1:
                    continue
                keep.append(m)
            env.queue = keep
            env.deliver(nid)
        elif op < 0.85:
            counter += 1
            with contextlib.suppress(ProposalDropped):
                env.nodes[nid].rn.propose(b"v%d" % counter)
        elif op < 0.86:
            rn = env.nodes[nid].rn
            counter += 1
            ctx = b"r%d" % counter
            # A read point must cover everything committed before the request.
            reads[ctx] = max(nd.rn._raft.log.committed for nd in env.nodes.values())
            with contextlib.suppress(ProposalDropped):
                rn.read_index(ctx)
        elif op < 0.87:
            rn = env.nodes[nid].rn
            rn.transfer_leader(rng.choice(sorted(env.nodes)))
        elif op < 0.88:
            groups = [set(), set()]
            for i in env.nodes:
                groups[rng.random() < 0.5].add(i)
            env.partition(*groups)
        elif op < 0.92:
            env.heal()
        elif op < 0.94 and len(alive) == len(env.nodes):
            env.crash(nid)
        elif op < 0.96:
            for i, nd in env.nodes.items():
                if nd.crashed:
                    env.restart(i)
        elif op < 0.98:
            node = env.nodes[nid]
            applied = node.rn._raft.log.applied
            st = node.storage
            if applied > st.first_index():
                data = encode_sm([(i, d) for i, d in node.applied if i <= applied])
                st.create_snapshot(applied, node.conf_state, data)
                st.compact(applied)
        else:
            rn = env.nodes[nid].rn
            if rn._raft.state == StateRole.LEADER and spare <= n + 2:
                env.add_nodes(1, jitter=True)
                try:
                    rn.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, spare))
                    spare += 1
                except ProposalDropped:
                    del env.nodes[spare]
        chk.check(env)
        for _, rs in env.read_states:
            assert rs.index >= reads[rs.request_ctx], f"stale read {rs}"
        env.read_states.clear()

    # Liveness: heal, restart everyone, and a leader must commit a new entry.
    env.heal()
    for i, nd in env.nodes.items():
        if nd.crashed:
            env.restart(i)
    for _ in range(300):
        for i in env.nodes:
            env.tick(i)
        env.stabilize(verbose=False)
        chk.check(env)
        leader = env.leader()
        if leader and env.nodes[leader].rn._raft.log.committed >= 1:
            try:
                env.nodes[leader].rn.propose(b"final")
            except ProposalDropped:
                continue
            env.stabilize(verbose=False)
            for _ in range(5):
                env.tick(leader)
                env.stabilize(verbose=False)
            if any(d == b"final" for _, d in env.nodes[leader].applied):
                chk.check(env)
                return
    raise AssertionError(f"seed {seed}: no progress after healing")


@pytest.mark.parametrize("seed", range(40))
def test_random_cluster(seed: int) -> None:
    try:
        run(seed)
    except RaftError as e:
        raise AssertionError(f"seed {seed}: {e!r}") from e
