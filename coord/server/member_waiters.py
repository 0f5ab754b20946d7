"""Who a member answers, and when — decided without I/O, for the server (whose waiters are
futures) and the simulator (whose waiters are client calls).

A waiter ``T`` waits for one of:

* its proposal (request id ``rid``) to be applied here: :meth:`Waiters.request_applied`
  hands it back for the caller to answer with the applier's result;
* this member to apply an index (a read after its ReadIndex): :meth:`Waiters.applied`
  returns those now due, in the order they came;

and is given up on as a :class:`Fail`: proposals on a leader change (their outcome is
unknown: ``leader changed``), every waiter past its deadline (``timed out``; deadlines
come in creation order, one timeout for all), everything when the member stops.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

__all__ = ["Fail", "FailReason", "Waiters"]

FailReason = Literal["leader changed", "timed out", "stopped"]


@dataclass(frozen=True, slots=True)
class Fail(Generic[T]):
    """Give up on ``waiters`` for ``reason`` (the caller answers them with its error)."""

    waiters: Sequence[T]
    reason: FailReason


class Waiters(Generic[T]):
    """A member's waiters. ``live(waiter)`` says whether one still wants an answer (the
    server's futures stop wanting one once done)."""

    def __init__(self, timeout: float, live: Callable[[T], bool] = lambda _: True) -> None:
        self.timeout = timeout
        self._live = live
        self.proposals: dict[int, T] = {}
        self._at_index: list[tuple[int, T]] = []
        self.deadlines: collections.deque[tuple[float, T]] = collections.deque()

    def __len__(self) -> int:
        return len(self.proposals) + len(self._at_index)

    # ------------------------------------------------------------------ waiting
    def bound(self, waiter: T, now: float) -> T:
        """Give ``waiter`` up (``timed out``) ``timeout`` after ``now``."""
        self.deadlines.append((now + self.timeout, waiter))
        return waiter

    def proposed(self, rid: int, waiter: T) -> None:
        """``waiter`` waits for the request ``rid`` to be applied here."""
        self.proposals[rid] = waiter

    def forget(self, rid: int) -> None:
        """The waiter of ``rid`` stopped waiting."""
        self.proposals.pop(rid, None)

    def wait_applied(self, index: int, waiter: T) -> None:
        """``waiter`` waits for this member to apply ``index``."""
        self._at_index.append((index, waiter))

    # ------------------------------------------------------------------ decisions
    def request_applied(self, rid: int) -> T | None:
        """The request ``rid`` was applied here: its waiter, to answer (None: none here)."""
        return self.proposals.get(rid)

    def dropped(self, rids: Sequence[int]) -> list[T]:
        """The requests ``rids`` were never appended (no leader): their live waiters, to
        answer that a retry is safe."""
        out = [self.proposals.get(rid) for rid in rids]
        return [w for w in out if w is not None and self._live(w)]

    def applied(self, index: int) -> list[T]:
        """This member applied up to ``index``: the waiters now due, in order."""
        if not self._at_index:
            return []
        due = [w for i, w in self._at_index if i <= index]
        if due:
            self._at_index = [(i, w) for i, w in self._at_index if i > index]
        return due

    def leader_changed(self) -> Fail[T] | None:
        """The leader changed: the proposals' outcome is unknown."""
        live = [w for w in self.proposals.values() if self._live(w)]
        return Fail(live, "leader changed") if live else None

    def expired(self, now: float) -> Fail[T] | None:
        """The waiters past their deadline at ``now``."""
        d = self.deadlines
        out: list[T] = []
        while d and (not self._live(d[0][1]) or d[0][0] <= now):
            _, w = d.popleft()
            if self._live(w):
                out.append(w)
        return Fail(out, "timed out") if out else None

    def drain(self) -> Fail[T]:
        """Every waiter (the member is stopping)."""
        out = [*self.proposals.values(), *(w for _, w in self._at_index)]
        self._at_index = []
        return Fail([w for w in out if self._live(w)], "stopped")

    def clear(self) -> None:
        """Forget every waiter (the process is gone)."""
        self.proposals.clear()
        self._at_index.clear()
        self.deadlines.clear()
