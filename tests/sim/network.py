"""A seeded, faulty network between simulated nodes.

Each directed link ``(frm, to)`` has its own loss and duplication probability (the
run-wide rates scaled by a per-link factor drawn once) and a delay of
``min_delay + Exp(mean)`` milliseconds, drawn per copy, so messages overtake each other
(reordering). Partitions block directed links: :meth:`Network.isolate` (one node, in
either or both directions), :meth:`Network.split` (groups that only talk inside
themselves) and :meth:`Network.block` (one directed link); :meth:`Network.heal` lifts them
all. A message is checked when it *arrives*: it is dropped if its link is blocked then or
its destination is down (messages to crashed nodes vanish, as with a reset connection).
:meth:`Network.calm` switches loss and duplication off (the liveness phase).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from coord.raft.types import Message
from tests.sim.eventloop import EventLoop


@dataclass(frozen=True, slots=True)
class NetOptions:
    loss: float = 0.0
    dup: float = 0.0
    min_delay: int = 1
    mean_delay: float = 5.0
    link_variance: bool = True  # per-link loss/dup factors in [0, 2)


@dataclass
class NetStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    blocked: int = 0
    to_down: int = 0


class Network:
    def __init__(
        self,
        loop: EventLoop,
        rng: random.Random,
        opts: NetOptions,
        node_ids: Iterable[int],
        deliver: Callable[[Message], None],
        is_up: Callable[[int], bool],
        on_drop: Callable[[Message, str], None] | None = None,
    ) -> None:
        self.loop = loop
        self.rng = rng
        self.opts = opts
        self._deliver = deliver
        self._is_up = is_up
        self._on_drop = on_drop
        self.blocked: set[tuple[int, int]] = set()  # membership tests only
        self.stats = NetStats()
        self.faulty = True
        ids = sorted(node_ids)
        self._factor: dict[tuple[int, int], tuple[float, float]] = {}
        for a in ids:
            for b in ids:
                if a != b:
                    if opts.link_variance:
                        self._factor[a, b] = (2 * rng.random(), 2 * rng.random())
                    else:
                        self._factor[a, b] = (1.0, 1.0)

    # -- sending -----------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        self.stats.sent += 1
        copies = 1
        if self.faulty:
            lf, df = self._factor.get((msg.frm, msg.to), (1.0, 1.0))
            if self.rng.random() < self.opts.loss * lf:
                self.stats.lost += 1
                self._drop(msg, "lost")
                return
            if self.rng.random() < self.opts.dup * df:
                self.stats.duplicated += 1
                copies = 2
        for _ in range(copies):
            delay = self.opts.min_delay + int(self.rng.expovariate(1.0 / self.opts.mean_delay))
            self.loop.after(delay, self._arrive, msg)

    def _arrive(self, msg: Message) -> None:
        if (msg.frm, msg.to) in self.blocked:
            self.stats.blocked += 1
            self._drop(msg, "partitioned")
            return
        if not self._is_up(msg.to):
            self.stats.to_down += 1
            self._drop(msg, "destination down")
            return
        self.stats.delivered += 1
        self._deliver(msg)

    def _drop(self, msg: Message, why: str) -> None:
        if self._on_drop is not None:
            self._on_drop(msg, why)

    # -- faults ------------------------------------------------------------------------
    def block(self, frm: int, to: int) -> None:
        self.blocked.add((frm, to))

    def isolate(self, node: int, others: Iterable[int], *, inbound: bool, outbound: bool) -> None:
        for o in sorted(others):
            if o == node:
                continue
            if outbound:
                self.blocked.add((node, o))
            if inbound:
                self.blocked.add((o, node))

    def split(self, groups: list[list[int]], *, symmetric: bool = True) -> None:
        """Only nodes in the same group can talk. Asymmetric: only the links from a lower
        group to a higher group are cut (the higher groups still hear the lower ones)."""
        for gi, ga in enumerate(groups):
            for gj, gb in enumerate(groups):
                if gi == gj or (not symmetric and gi > gj):
                    continue
                for a in ga:
                    for b in gb:
                        self.blocked.add((a, b))

    def heal(self) -> None:
        self.blocked.clear()

    def calm(self) -> None:
        """No more loss or duplication (delays stay)."""
        self.faulty = False

    def describe_partition(self) -> str:
        return ",".join(f"{a}->{b}" for a, b in sorted(self.blocked)) or "none"
