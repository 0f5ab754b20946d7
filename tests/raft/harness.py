"""A small in-process cluster for the Raft core's tests: RawNodes over MemoryStorage, a
message queue the test delivers explicitly, partitions, and a trivial state machine.

Every interleaving is explicit: nothing happens unless a test calls ``process_ready``,
``deliver`` or ``stabilize``. The Ready contract is followed exactly (persist, then send,
then apply, then advance).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from coord.raft import (
    ConfChange,
    Config,
    ConfState,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    RaftError,
    RawNode,
    ReadState,
    Snapshot,
    SnapshotMetadata,
    describe_message,
    describe_ready,
)
from coord.raft.describe import describe_conf_state


class FixedRandom(random.Random):
    """Election timeouts always at their minimum: scenario output stays predictable."""

    def randint(self, a: int, b: int) -> int:
        return a


@dataclass
class Node:
    id: int
    rn: RawNode
    storage: MemoryStorage
    config: Config
    applied: list[tuple[int, bytes]] = field(default_factory=list)
    conf_state: ConfState = field(default_factory=ConfState)
    crashed: bool = False


def encode_sm(applied: list[tuple[int, bytes]]) -> bytes:
    return b"\n".join(b"%d:%s" % (i, d) for i, d in applied)


def decode_sm(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    for line in data.split(b"\n"):
        if line:
            i, _, d = line.partition(b":")
            out.append((int(i), d))
    return out


class Env:
    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {}
        self.queue: list[Message] = []
        self.groups: list[set[int]] = []  # empty: fully connected
        self.dropped_links: set[tuple[int, int]] = set()
        self.read_states: list[tuple[int, ReadState]] = []

    # -- setup --------------------------------------------------------------------------
    def add_nodes(
        self,
        n: int,
        voters: tuple[int, ...] = (),
        learners: tuple[int, ...] = (),
        index: int = 1,
        jitter: bool = False,
        **cfg: Any,
    ) -> list[int]:
        """Add ``n`` nodes. With ``voters``, each starts from a snapshot at ``index``
        (term 1) holding that configuration; without, it starts empty (to join later)."""
        ids = []
        for _ in range(n):
            nid = max(self.nodes, default=0) + 1
            storage = MemoryStorage()
            cs = ConfState(tuple(sorted(voters)), tuple(sorted(learners)))
            applied = 0
            if voters:
                storage.apply_snapshot(Snapshot(SnapshotMetadata(index, 1, cs)))
                storage.set_hard_state(HardState(term=1, commit=index))
                applied = index
            rng = random.Random(nid) if jitter else FixedRandom(nid)
            config = Config(id=nid, rng=rng, applied=applied, **cfg)
            self.nodes[nid] = Node(nid, RawNode(config, storage), storage, config, conf_state=cs)
            ids.append(nid)
        return ids

    # -- network --------------------------------------------------------------------------
    def blocked(self, frm: int, to: int) -> bool:
        if (frm, to) in self.dropped_links:
            return True
        if not self.groups:
            return False
        return not any(frm in g and to in g for g in self.groups)

    def partition(self, *groups: set[int]) -> None:
        self.groups = [set(g) for g in groups]

    def isolate(self, nid: int) -> None:
        rest = set(self.nodes) - {nid}
        self.partition({nid}, rest)

    def heal(self) -> None:
        self.groups = []
        self.dropped_links = set()

    # -- the Ready loop -------------------------------------------------------------------
    def process_ready(self, nid: int) -> list[str]:
        node = self.nodes[nid]
        rn = node.rn
        if not rn.has_ready():
            return []
        rd = rn.ready()
        out = describe_ready(rd)
        # 1. persist
        if rd.snapshot is not None:
            node.storage.apply_snapshot(rd.snapshot)
        node.storage.append(rd.entries)
        if rd.hard_state is not None:
            node.storage.set_hard_state(rd.hard_state)
        self.read_states.extend((nid, rs) for rs in rd.read_states)
        # 2. send
        self.queue.extend(rd.messages)
        self.queue.extend(rd.messages_after_persist)
        # 3. apply
        if rd.snapshot is not None:
            node.applied = decode_sm(rd.snapshot.data)
            node.conf_state = rd.snapshot.metadata.conf_state
        for e in rd.committed_entries:
            if e.type == EntryType.CONF_CHANGE:
                node.conf_state = rn.apply_conf_change(ConfChange.decode(e.data))
                out.append(f"  applied: {describe_conf_state(node.conf_state)}")
            elif e.data:
                node.applied.append((e.index, e.data))
        # 4. advance
        rn.advance(rd)
        return out

    def deliver(self, nid: int | None = None) -> list[str]:
        """Deliver every queued message addressed to ``nid`` (all nodes if None)."""
        out: list[str] = []
        keep: list[Message] = []
        todo = self.queue
        self.queue = []
        for m in todo:
            if nid is not None and m.to != nid:
                keep.append(m)
                continue
            if m.to not in self.nodes or self.nodes[m.to].crashed or self.blocked(m.frm, m.to):
                out.append(f"  dropped: {describe_message(m)}")
                continue
            out.append(f"  {describe_message(m)}")
            try:
                self.nodes[m.to].rn.step(m)
            except RaftError as e:  # an invariant broke (bug-injection scenarios)
                out.append(f"  error: {type(e).__name__}: {e}")
        self.queue = keep + self.queue
        return out

    def stabilize(self, ids: list[int] | None = None, verbose: bool = True) -> list[str]:
        """Process Readys and deliver messages until nothing is left to do."""
        ids = [i for i in (ids or sorted(self.nodes)) if not self.nodes[i].crashed]
        out: list[str] = []
        while True:
            progressed = False
            for nid in ids:
                lines = self.process_ready(nid)
                if lines:
                    progressed = True
                    out.append(f"> {nid} ready")
                    out.extend(lines)
            for nid in ids:
                if any(m.to == nid for m in self.queue):
                    progressed = True
                    out.append(f"> {nid} receives")
                    out.extend(self.deliver(nid))
            if not progressed:
                return out if verbose else []

    def crash(self, nid: int) -> None:
        """The node stops; everything it persisted survives (MemoryStorage)."""
        self.nodes[nid].crashed = True

    def restart(self, nid: int) -> None:
        """Rebuild the node from its storage; the state machine restarts from the
        storage snapshot and re-applies committed entries."""
        node = self.nodes[nid]
        snap = node.storage.snapshot()
        node.applied = decode_sm(snap.data)
        node.conf_state = snap.metadata.conf_state
        cfg = node.config
        cfg.applied = snap.metadata.index
        node.rn = RawNode(cfg, node.storage)
        node.crashed = False

    # -- helpers for tests ------------------------------------------------------------------
    def tick(self, nid: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[nid].rn.tick()

    def leader(self) -> int:
        from coord.raft import StateRole

        leaders = [
            nid for nid, nd in self.nodes.items() if nd.rn._raft.state == StateRole.LEADER
        ]
        return max(leaders, key=lambda i: self.nodes[i].rn._raft.term) if leaders else 0

    def elect(self, nid: int) -> None:
        self.nodes[nid].rn.campaign()
        self.stabilize()


__all__ = ["Env", "FixedRandom", "MessageType", "Node"]
