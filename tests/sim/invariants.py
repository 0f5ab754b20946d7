"""Raft safety invariants, checked incrementally as the simulation runs.

The cluster driver calls a hook whenever the state an invariant talks about changes (a
role change, entries or a snapshot persisted, an entry applied, a crash, a restart), so
every invariant holds after every event without rescanning logs. A violation raises
:class:`Violation` at once, at the event that broke it.

Checked (Raft paper Fig. 3, plus durability):

1. *Election safety*: at most one leader per term (a global ``term -> leader`` map).
2. *Leader append-only*: a leader never overwrites or truncates its own log, nor installs
   a snapshot, while it leads in a term.
3. *Log matching*: each node's persisted log carries a prefix hash chain
   ``h[i] = H(h[i-1], term_i, type_i, data_i)``; a global ``(index, term) -> h`` map must
   never disagree (same index and term ⇒ same entry and same prefix).
4. *Leader completeness*: once a node becomes leader (with that Ready persisted), its log
   contains every entry known committed (the chain hash at the highest committed index
   matches), unless its snapshot already covers it.
5. *State-machine safety*: every node applies, at each index, the entry with the same
   chain hash (a global ``index -> (term, h)`` map), strictly in index order; snapshots
   installed sit at an index/term known committed.
6. *Leader commit rule* (§5.4.2): when a leader advances its commit index, the entry
   there is of the leader's own term (older entries are committed only indirectly).
7. *Durability*: the term a node promised in a message sent after persisting (APP_RESP,
   VOTE_RESP, VOTE) never goes back across a crash, and a vote granted in a term is still
   the vote after restart; every acknowledged client write stays in the final leader's log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coord.raft.types import Entry, HardState, Message, MessageType, Snapshot

BOOT_HASH = hash(("bootstrap", 1, 1))


class Violation(Exception):
    """An invariant failed (the message says which, where and when)."""


@dataclass
class Chain:
    """Prefix hashes of one node's persisted log, from ``base`` (its snapshot) on."""

    base: int = 0
    terms: list[int] = field(default_factory=lambda: [0])
    hashes: list[int] = field(default_factory=lambda: [0])

    def last(self) -> int:
        return self.base + len(self.hashes) - 1

    def hash_at(self, i: int) -> int | None:
        k = i - self.base
        return self.hashes[k] if 0 <= k < len(self.hashes) else None

    def term_at(self, i: int) -> int | None:
        k = i - self.base
        return self.terms[k] if 0 <= k < len(self.terms) else None

    def reset(self, index: int, term: int, h: int) -> None:
        self.base = index
        self.terms = [term]
        self.hashes = [h]

    def copy(self) -> Chain:
        return Chain(self.base, list(self.terms), list(self.hashes))


class Invariants:
    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}  # term -> leader
        self.pair_hash: dict[tuple[int, int], int] = {}  # (index, term) -> chain hash
        self.committed: dict[int, tuple[int, int]] = {1: (1, BOOT_HASH)}
        self.max_committed = 1
        self.chains: dict[int, Chain] = {}
        self.leading: dict[int, int] = {}  # node -> term it currently leads (0 = none)
        self.promised: dict[int, tuple[int, int]] = {}  # node -> (term, vote in that term)
        self.acked: dict[int, int] = {}  # log index of acknowledged client writes -> hash
        self.checks = 0

    # -- chains ------------------------------------------------------------------------
    def new_node(self, node: int) -> None:
        self.chains[node] = Chain()

    def restore_chain(self, node: int, snap: Snapshot | None, entries: list[Entry]) -> None:
        """After a restart: rebuild the chain from the durable image."""
        ch = Chain()
        if snap is not None and snap.metadata.index > 0:
            idx, term = snap.metadata.index, snap.metadata.term
            ch.reset(idx, term, self._committed_hash(node, idx, term, "restored snapshot"))
        self.chains[node] = ch
        self._extend(node, ch, entries, check_leader=False)

    def _committed_hash(self, node: int, idx: int, term: int, what: str) -> int:
        known = self.committed.get(idx)
        if known is None:
            raise Violation(f"node {node}: {what} at {term}/{idx}, not known to be committed")
        if known[0] != term:
            raise Violation(
                f"node {node}: {what} at {term}/{idx}, but the entry committed at {idx} "
                f"has term {known[0]}"
            )
        return known[1]

    def _extend(self, node: int, ch: Chain, entries: list[Entry], *, check_leader: bool) -> None:
        if not entries:
            return
        first = entries[0].index
        if first <= ch.base:
            entries = [e for e in entries if e.index > ch.base]
            if not entries:
                return
            first = entries[0].index
        if first > ch.last() + 1:
            raise Violation(f"node {node}: log gap, last {ch.last()}, appending at {first}")
        if check_leader and first <= ch.last() and self.leading.get(node, 0):
            raise Violation(
                f"node {node}: leader of term {self.leading[node]} overwrote its own log "
                f"at index {first} (last was {ch.last()}) — leader append-only"
            )
        k = first - ch.base
        del ch.hashes[k:]
        del ch.terms[k:]
        prev = ch.hashes[-1]
        for e in entries:
            h = hash((prev, e.term, int(e.type), e.data))
            key = (e.index, e.term)
            seen = self.pair_hash.setdefault(key, h)
            if seen != h:
                raise Violation(
                    f"node {node}: log matching violated at {e.term}/{e.index}: same index and "
                    "term as an entry elsewhere, different entry or prefix"
                )
            ch.hashes.append(h)
            ch.terms.append(e.term)
            prev = h

    # -- hooks from the driver -----------------------------------------------------------
    def on_persist(self, node: int, snap: Snapshot | None, entries: list[Entry]) -> None:
        self.checks += 1
        ch = self.chains[node]
        if snap is not None:
            if self.leading.get(node, 0):
                raise Violation(f"node {node}: leader installed a snapshot")
            idx, term = snap.metadata.index, snap.metadata.term
            ch.reset(idx, term, self._committed_hash(node, idx, term, "snapshot installed"))
        self._extend(node, ch, entries, check_leader=True)

    def on_role(self, node: int, is_leader: bool, term: int) -> None:
        """Soft state changed; call after the Ready's entries were persisted."""
        self.checks += 1
        if not is_leader:
            self.leading[node] = 0
            return
        other = self.leaders.setdefault(term, node)
        if other != node:
            raise Violation(f"election safety: nodes {other} and {node} both lead term {term}")
        self.leading[node] = term
        self.check_complete(node, f"new leader of term {term}", term)

    def on_commit(self, node: int, old: int, new: int, term: int) -> None:
        """A leader's hard state moved its commit index from ``old`` to ``new``."""
        self.checks += 1
        if new <= old or not self.leading.get(node, 0):
            return
        at = self.chains[node].term_at(new)
        if at is not None and at != term:
            raise Violation(
                f"leader commit rule: leader {node} of term {term} advanced its commit index "
                f"{old} -> {new}, onto an entry of term {at} (Raft §5.4.2)"
            )

    def check_complete(self, node: int, who: str, term: int | None = None) -> None:
        """``node`` (a leader of ``term``, if given) holds the committed entries it must:
        every one, or for a leader of ``term`` those of an older term — Raft's leader
        completeness covers the leaders of later terms only, and an entry of term ``term``
        or newer was committed in a term no older than ``term`` (a stale candidate can win
        ``term`` with a vote delayed past the commit of a newer term's entry)."""
        ch = self.chains[node]
        c = self.max_committed
        if term is not None:
            while c > ch.base and c in self.committed and self.committed[c][0] >= term:
                c -= 1
        if c <= ch.base or c not in self.committed:
            return
        want = self.committed[c][1]
        have = ch.hash_at(c)
        if have != want:
            raise Violation(
                f"leader completeness: {who} (node {node}, log {ch.base + 1}..{ch.last()}) "
                f"lacks committed entry {self.committed[c][0]}/{c}"
            )

    def on_apply(self, node: int, e: Entry) -> None:
        self.checks += 1
        ch = self.chains[node]
        h = ch.hash_at(e.index)
        if h is None or ch.term_at(e.index) != e.term:
            raise Violation(
                f"node {node}: applying {e.term}/{e.index}, which is not in its persisted log "
                f"({ch.base}..{ch.last()})"
            )
        known = self.committed.get(e.index)
        if known is None:
            self.committed[e.index] = (e.term, h)
            self.max_committed = max(self.max_committed, e.index)
        elif known != (e.term, h):
            raise Violation(
                f"state machine safety: node {node} applied {e.term}/{e.index}, but "
                f"{known[0]}/{e.index} (or a different prefix) was applied elsewhere"
            )

    def on_ack(self, index: int) -> None:
        self.acked[index] = self.committed[index][1]

    def on_send_after_persist(self, node: int, hs: HardState, msgs: list[Message]) -> None:
        """Record what ``node`` promised: the term of its durable responses and its vote."""
        term, vote = self.promised.get(node, (0, 0))
        for m in msgs:
            if m.type in (MessageType.PRE_VOTE, MessageType.PRE_VOTE_RESP):
                continue  # pre-votes carry a prospective term, nothing is persisted
            if m.term > term:
                term, vote = m.term, 0
            if m.type == MessageType.VOTE_RESP and not m.reject and m.term == term:
                vote = m.to
            if m.type == MessageType.VOTE and m.term == term:
                vote = node  # a candidate votes for itself before asking
        self.promised[node] = (term, vote)

    def on_restart(self, node: int, hs: HardState) -> None:
        self.checks += 1
        term, vote = self.promised.get(node, (0, 0))
        if hs.term < term:
            raise Violation(
                f"durability: node {node} restarted at term {hs.term}, but had promised "
                f"term {term} before the crash"
            )
        if hs.term == term and vote and hs.vote != vote:
            raise Violation(
                f"durability: node {node} voted for {vote} in term {term}, but restarted "
                f"with vote {hs.vote} in that term"
            )

    def check_acked_in(self, node: int) -> None:
        """Every acknowledged write is in ``node``'s log (or below its snapshot)."""
        ch = self.chains[node]
        for idx in sorted(self.acked):
            if idx <= ch.base:
                continue
            if ch.hash_at(idx) != self.acked[idx]:
                raise Violation(
                    f"durability: acknowledged write at index {idx} is missing from "
                    f"leader {node}'s log"
                )
