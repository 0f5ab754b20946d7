"""Linearizability checkers for single-key KV histories (see :mod:`tests.helpers.history`).

Two independent checkers, usable on simulator histories (virtual time) and on histories
recorded against real servers (wall-clock time):

:func:`check_wgl`
    The Wing & Gong search with Lowe's memoisation, as Knossos and porcupine do it.
    All ops are single-key, so the history is split per key (P-compositionality: a
    history is linearizable iff each per-key sub-history is) and each key is searched on
    its own. The search walks a time-ordered doubly linked list of call/return events;
    at a call it tries to linearize the op now (the model must accept the observed
    output, and the configuration ``(bitmask of linearized ops, model state)`` must be
    new — the memo), at a return it backtracks. ``UNKNOWN`` writes have no return event
    (their return is at infinity): they may be linearized anywhere after their call, or
    never. ``FAIL`` ops and ``UNKNOWN`` reads are dropped (they constrain nothing).
    Exact, but exponential in the worst case: ``max_steps`` bounds the work per key and
    an exhausted budget gives an inconclusive result (``ok is None``), never a false
    alarm. Revisions are ignored, so it works for systems that do not report them.

:func:`check_revisions`
    The cheap check for stores whose every response carries the store revision (etcd's
    ``header.revision``): successful writes get an exact place in the total order.
    (a) no two writes share a revision; (b) successful writes, sorted by revision,
    replayed on a per-key model, explain every read: a read at revision ``r`` returns the
    model's value at ``r`` (and a CAS's compare outcome matches it); (c) real-time order:
    an op invoked after another op returned has a revision ≥ the other's (> if it is a
    write); (d) revisions not produced by any acknowledged write ("gaps") must be
    explainable by indeterminate writes: there may be no more gaps than ``UNKNOWN``
    writes (unless ``strict_gaps=False``, for stores whose revision also moves for other
    reasons), and a read may only see a value some write (acknowledged or indeterminate)
    wrote. Where an indeterminate write may fill a gap, the model keeps the *set* of
    possible values of the key (as etcd's non-deterministic model does) and a read narrows
    it; this keeps the check free of false alarms at the price of missing some violations
    that involve indeterminate writes — :func:`check_wgl` is the exact cross-check.
    Ops without a revision are skipped.

Both return a :class:`CheckResult`; :func:`check_history` runs both.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tests.helpers.history import Kind, Op, Status

__all__ = ["CheckResult", "check_history", "check_revisions", "check_wgl"]


@dataclass
class CheckResult:
    """``ok``: True = linearizable, False = a violation was found, None = inconclusive."""

    ok: bool | None
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.ok is not False

    def merge(self, other: CheckResult) -> CheckResult:
        if self.ok is False or other.ok is False:
            ok: bool | None = False
        elif self.ok is None or other.ok is None:
            ok = None
        else:
            ok = True
        return CheckResult(ok, self.violations + other.violations, self.notes + other.notes)

    def report(self) -> str:
        verdict = {True: "linearizable", False: "NOT linearizable", None: "inconclusive"}[self.ok]
        return "\n".join([verdict, *self.violations, *self.notes])


# --------------------------------------------------------------------------- model

State = str | None  # the value of one key; None = absent


def _step(state: State, op: Op) -> tuple[bool, State]:
    """The single-key register model: may ``op`` (with its observed output) run in ``state``?"""
    if op.kind is Kind.PUT:
        return True, op.value
    if op.kind is Kind.GET:
        return state == op.result, state
    # CAS
    if op.status is not Status.OK:  # indeterminate: the outcome follows the state
        return True, (op.value if state == op.expected else state)
    if op.succeeded:
        return state == op.expected, (op.value if state == op.expected else state)
    return state != op.expected, state


# --------------------------------------------------------------------------- WGL


def _relevant(ops: Iterable[Op]) -> list[Op]:
    out = []
    for op in ops:
        if op.status is Status.FAIL:
            continue
        if op.status is Status.UNKNOWN and op.kind is Kind.GET:
            continue
        out.append(op)
    return out


def _wgl_key(key: str, ops: Sequence[Op], max_steps: int) -> CheckResult:
    """WGL + memo over one key's ops. Entries are numbered 1..E; 0 is the list head."""
    n = len(ops)
    events: list[tuple[float, int, int]] = []  # (time, 0=call / 1=return, op index)
    required = [0] * n
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        if op.status is Status.OK:
            if op.ret is None:
                raise ValueError(f"op #{op.id} is OK but has no return time")
            events.append((op.ret, 1, i))
            required[i] = 1
    events.sort()
    e_count = len(events)
    nxt = [-1] * (e_count + 1)
    prv = [-1] * (e_count + 1)
    op_of = [-1] * (e_count + 1)
    is_ret = [False] * (e_count + 1)
    match = [-1] * (e_count + 1)  # call entry -> its return entry
    call_entry = [-1] * n
    for pos, (_t, typ, i) in enumerate(events, start=1):
        op_of[pos] = i
        is_ret[pos] = typ == 1
        if typ == 0:
            call_entry[i] = pos
        else:
            match[call_entry[i]] = pos
    for pos in range(e_count + 1):
        nxt[pos] = pos + 1 if pos < e_count else -1
        prv[pos] = pos - 1

    def lift(e: int) -> None:
        p, q = prv[e], nxt[e]
        nxt[p] = q
        if q != -1:
            prv[q] = p
        m = match[e]
        if m != -1:
            p, q = prv[m], nxt[m]
            nxt[p] = q
            if q != -1:
                prv[q] = p

    def unlift(e: int) -> None:
        m = match[e]
        if m != -1:
            nxt[prv[m]] = m
            if nxt[m] != -1:
                prv[nxt[m]] = m
        nxt[prv[e]] = e
        if nxt[e] != -1:
            prv[nxt[e]] = e

    total_required = sum(required)
    done = 0
    best = 0
    stuck_at = -1
    state: State = None
    mask = 0
    stack: list[tuple[int, State]] = []
    cache: set[tuple[int, State]] = set()
    entry = nxt[0]
    steps = 0
    while True:
        if done == total_required:
            return CheckResult(True)
        steps += 1
        if steps > max_steps:
            return CheckResult(
                None,
                notes=[f"key {key!r}: WGL budget of {max_steps} steps exhausted ({n} ops)"],
            )
        if entry == -1 or is_ret[entry]:
            if done >= best:
                best = done
                stuck_at = op_of[entry] if entry != -1 else -1
            if not stack:
                msg = (
                    f"key {key!r}: no linearization; at most {best} of {total_required} "
                    f"acknowledged ops could be ordered"
                )
                if stuck_at >= 0:
                    msg += f"; stuck before the return of {ops[stuck_at].describe()}"
                return CheckResult(False, violations=[msg])
            e, old = stack.pop()
            i = op_of[e]
            mask ^= 1 << i
            state = old
            done -= required[i]
            unlift(e)
            entry = nxt[e]
            continue
        i = op_of[entry]
        accepted, new_state = _step(state, ops[i])
        if accepted:
            new_mask = mask | (1 << i)
            conf = (new_mask, new_state)
            if conf not in cache:
                cache.add(conf)
                stack.append((entry, state))
                state = new_state
                mask = new_mask
                done += required[i]
                lift(entry)
                entry = nxt[0]
                continue
        entry = nxt[entry]


def check_wgl(ops: Iterable[Op], *, max_steps: int = 200_000) -> CheckResult:
    """Exact linearizability check, per key (see the module docstring)."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in _relevant(ops):
        by_key[op.key].append(op)
    result = CheckResult(True)
    for key in sorted(by_key):
        result = result.merge(_wgl_key(key, by_key[key], max_steps))
    return result


# --------------------------------------------------------------------------- revisions


def check_revisions(
    ops: Iterable[Op], *, initial_revision: int = 0, strict_gaps: bool = True
) -> CheckResult:
    """Revision-order check (see the module docstring). The store is empty at
    ``initial_revision``; the first write creates ``initial_revision + 1``."""
    all_ops = list(ops)
    violations: list[str] = []
    timed = [o for o in all_ops if o.status is Status.OK and o.revision is not None]
    writes = [o for o in timed if o.is_write]
    reads = [o for o in timed if not o.is_write]
    unknown_writes = [o for o in all_ops if o.status is Status.UNKNOWN and o.kind is not Kind.GET]

    # (a) unique revisions, above the initial one
    write_at: dict[int, Op] = {}
    for w in sorted(writes, key=lambda o: (o.revision, o.id)):
        assert w.revision is not None
        if w.revision <= initial_revision:
            violations.append(f"write at revision ≤ initial {initial_revision}: {w.describe()}")
        elif w.revision in write_at:
            violations.append(
                f"two writes share revision {w.revision}: "
                f"{write_at[w.revision].describe()} and {w.describe()}"
            )
        else:
            write_at[w.revision] = w

    # values anybody may have written, per key (unique-value assumption)
    written: dict[str, set[str | None]] = defaultdict(lambda: {None})
    for o in all_ops:
        if o.kind is not Kind.GET and o.status is not Status.FAIL:
            written[o.key].add(o.value)
    maybe_values: dict[str, list[Op]] = defaultdict(list)
    for o in unknown_writes:
        maybe_values[o.key].append(o)

    # (b) + (d) replay
    reads_at: dict[int, list[Op]] = defaultdict(list)
    for r in reads:
        assert r.revision is not None
        reads_at[r.revision].append(r)
    points = sorted(set(write_at) | set(reads_at))
    possible: dict[str, set[str | None]] = defaultdict(lambda: {None})
    gaps = 0
    prev = initial_revision
    for rev in points:
        # revisions in (prev, rev) have no acknowledged write; neither has rev itself
        # when only reads were served at it
        missing = 0
        if rev > prev:
            missing = rev - prev - 1 + (0 if rev in write_at else 1)
        if missing > 0:
            gaps += missing
            # some indeterminate write(s) may have taken effect in the gap
            for key in sorted(maybe_values):
                cur = possible[key]
                for u in maybe_values[key]:
                    if u.kind is Kind.PUT or u.expected in cur:
                        cur.add(u.value)
        wr = write_at.get(rev)
        if wr is not None:
            cur = possible[wr.key]
            if wr.kind is Kind.CAS and wr.expected not in cur:
                violations.append(
                    f"CAS succeeded at revision {rev} but the key held "
                    f"{_fmt_set(cur)}, not {wr.expected!r}: {wr.describe()}"
                )
            possible[wr.key] = {wr.value}
        prev = max(prev, rev)
        for r in sorted(reads_at.get(rev, []), key=lambda o: o.id):
            cur = possible[r.key]
            if r.kind is Kind.GET:
                if r.result not in cur:
                    what = (
                        "a value no write produced"
                        if r.result not in written[r.key]
                        else f"{r.result!r}, but the key held {_fmt_set(cur)} at that revision"
                    )
                    violations.append(f"read at revision {rev} saw {what}: {r.describe()}")
                possible[r.key] = {r.result}
            else:  # CAS whose compare failed
                if cur == {r.expected}:
                    violations.append(
                        f"CAS compare failed at revision {rev} but the key held "
                        f"{r.expected!r}: {r.describe()}"
                    )
                cur.discard(r.expected)
                if not cur:
                    cur.add(None)
    if strict_gaps and gaps > len(unknown_writes):
        violations.append(
            f"{gaps} revision(s) up to {prev} were created by no acknowledged write, but only "
            f"{len(unknown_writes)} write(s) are indeterminate (a write applied twice, or "
            "an acknowledged write lost and its revision reused?)"
        )

    # (c) real-time order
    by_ret = sorted((o for o in timed), key=lambda o: (o.ret, o.id))
    by_call = sorted(timed, key=lambda o: (o.call, o.id))
    best: Op | None = None
    j = 0
    for b in by_call:
        while j < len(by_ret) and (by_ret[j].ret or 0.0) < b.call:
            a = by_ret[j]
            if best is None or (a.revision or 0) > (best.revision or 0):
                best = a
            j += 1
        if best is None:
            continue
        assert b.revision is not None and best.revision is not None
        if b.revision < best.revision or (b.is_write and b.revision == best.revision):
            how = "lower" if b.revision < best.revision else "equal"
            violations.append(
                f"real-time order violated: {b.describe()} was invoked after "
                f"{best.describe()} returned, but has a {how} revision"
            )
    return CheckResult(not violations, violations=violations)


def _fmt_set(values: set[str | None]) -> str:
    items = sorted(values, key=lambda v: (v is not None, v or ""))
    return "{" + ", ".join(repr(v) for v in items) + "}"


def check_history(
    ops: Sequence[Op],
    *,
    initial_revision: int = 0,
    strict_gaps: bool = True,
    max_steps: int = 200_000,
) -> CheckResult:
    """Both checks; violations of either are reported."""
    rev = check_revisions(ops, initial_revision=initial_revision, strict_gaps=strict_gaps)
    wgl = check_wgl(ops, max_steps=max_steps)
    return rev.merge(wgl)
