"""The linearizability checkers accept known-good histories and reject known-bad ones."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from tests.helpers.history import (
    HistoryError,
    Kind,
    Op,
    Recorder,
    Status,
    format_history,
)
from tests.helpers.linearizability import (
    CheckResult,
    check_history,
    check_revisions,
    check_wgl,
)

OK, FAIL, UNKNOWN = Status.OK, Status.FAIL, Status.UNKNOWN


class H:
    """A tiny history builder: ``h.put(client, key, value, call, ret, rev)`` …"""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def _add(self, **kw: object) -> H:
        self.ops.append(Op(id=len(self.ops), **kw))  # type: ignore[arg-type]
        return self

    def put(
        self, c: int, key: str, value: str, call: float, ret: float | None, rev: int | None = None
    ) -> H:
        status = OK if ret is not None else UNKNOWN
        return self._add(
            client=c, kind=Kind.PUT, key=key, value=value, call=call, ret=ret,
            status=status, revision=rev if status is OK else None,
        )  # fmt: skip

    def get(
        self, c: int, key: str, result: str | None, call: float, ret: float, rev: int | None = None
    ) -> H:
        return self._add(
            client=c, kind=Kind.GET, key=key, result=result, call=call, ret=ret,
            status=OK, revision=rev,
        )  # fmt: skip

    def cas(
        self,
        c: int,
        key: str,
        expected: str | None,
        value: str,
        call: float,
        ret: float | None,
        succeeded: bool | None = None,
        rev: int | None = None,
    ) -> H:
        status = OK if ret is not None else UNKNOWN
        return self._add(
            client=c, kind=Kind.CAS, key=key, expected=expected, value=value, call=call,
            ret=ret, status=status, succeeded=succeeded, revision=rev if status is OK else None,
        )  # fmt: skip

    def failed(self, c: int, key: str, value: str, call: float, ret: float) -> H:
        return self._add(
            client=c, kind=Kind.PUT, key=key, value=value, call=call, ret=ret, status=FAIL
        )


def both(ops: list[Op]) -> tuple[CheckResult, CheckResult]:
    return check_revisions(ops), check_wgl(ops)


def assert_good(ops: list[Op]) -> None:
    rev, wgl = both(ops)
    assert rev.ok is True, rev.report() + "\n" + format_history(ops)
    assert wgl.ok is True, wgl.report() + "\n" + format_history(ops)


def assert_bad(ops: list[Op], *, rev: bool = True, wgl: bool = True) -> None:
    r, w = both(ops)
    if rev:
        assert r.ok is False, "revision check accepted:\n" + format_history(ops)
        assert r.violations
    if wgl:
        assert w.ok is False, "WGL accepted:\n" + format_history(ops)
        assert w.violations


# ----------------------------------------------------------------- known-good


def test_empty_history() -> None:
    assert_good([])


def test_sequential_puts_and_gets() -> None:
    h = H().put(1, "x", "a", 0, 1, 1).get(2, "x", "a", 2, 3, 1).put(1, "x", "b", 4, 5, 2)
    h.get(2, "x", "b", 6, 7, 2).get(2, "y", None, 8, 9, 2)
    assert_good(h.ops)


def test_concurrent_read_may_see_either_value() -> None:
    for seen, rev in (("a", 1), ("b", 2)):
        h = H().put(1, "x", "a", 0, 1, 1).put(1, "x", "b", 2, 6, 2)
        h.get(2, "x", seen, 3, 4, rev)
        assert_good(h.ops)


def test_cas_success_and_failure() -> None:
    h = H().cas(1, "x", None, "a", 0, 1, True, 1)  # create-if-absent
    h.cas(2, "x", None, "b", 2, 3, False, 1)  # already exists
    h.cas(1, "x", "a", "c", 4, 5, True, 2)
    h.cas(2, "x", "a", "d", 6, 7, False, 2)
    h.get(1, "x", "c", 8, 9, 2)
    assert_good(h.ops)


def test_closed_intervals_touching_ops_are_concurrent() -> None:
    # the read is invoked exactly when the put returns: both orders are allowed
    h = H().put(1, "x", "a", 0, 5, 1).get(2, "x", None, 5, 6, 0)
    assert_good(h.ops)


def test_definitely_failed_write_is_ignored() -> None:
    h = H().failed(1, "x", "a", 0, 1).get(2, "x", None, 2, 3, 0)
    assert_good(h.ops)


def test_indeterminate_write_that_took_effect() -> None:
    h = H().put(1, "x", "a", 0, None).get(2, "x", "a", 5, 6, 1).put(2, "x", "b", 7, 8, 2)
    h.get(2, "x", "b", 9, 10, 2)
    assert_good(h.ops)


def test_indeterminate_write_that_never_took_effect() -> None:
    h = H().put(1, "x", "a", 0, None).get(2, "x", None, 5, 6, 0).put(2, "x", "b", 7, 8, 1)
    h.get(2, "x", "b", 9, 10, 1)
    assert_good(h.ops)


def test_indeterminate_write_taking_effect_late() -> None:
    # invoked early, observed only much later: it may take effect any time after its call
    h = H().put(1, "x", "a", 0, None).get(2, "x", None, 1, 2, 0).put(2, "x", "b", 3, 4, 1)
    h.get(2, "x", "a", 10, 11, 2)
    assert_good(h.ops)


def test_indeterminate_cas_both_ways() -> None:
    for seen, rev in (("b", 2), ("a", 1)):
        h = H().put(1, "x", "a", 0, 1, 1).cas(2, "x", "a", "b", 2, None)
        h.get(1, "x", seen, 5, 6, rev)
        assert_good(h.ops)


def test_per_key_histories_are_independent() -> None:
    # without revisions, x's put may take effect after both reads (y's order is separate)
    h = H().put(1, "x", "a", 0, 10).put(2, "y", "b", 1, 9)
    h.get(3, "y", "b", 9.5, 9.6).get(3, "x", None, 9.7, 9.8)
    assert check_wgl(h.ops).ok is True
    # with revisions the order is total: put x made revision 1 < 2, so x must read "a"
    h = H().put(1, "x", "a", 0, 10, 1).put(2, "y", "b", 1, 9, 2)
    h.get(3, "y", "b", 9.5, 9.6, 2).get(3, "x", None, 9.7, 9.8, 2)
    assert check_revisions(h.ops).ok is False


def test_many_concurrent_unknown_writes_stay_tractable() -> None:
    h = H()
    for i in range(14):
        h.put(i, "x", f"v{i}", i, None)
    h.get(99, "x", "v7", 50, 51, 9)
    h.get(99, "x", "v7", 52, 53, 14)
    rev, wgl = both(h.ops)
    assert rev.ok is True, rev.report()
    assert wgl.ok is True, wgl.report()


# ----------------------------------------------------------------- known-bad


def test_stale_read() -> None:
    h = H().put(1, "x", "a", 0, 1, 1).put(1, "x", "b", 2, 3, 2).get(2, "x", "a", 4, 5, 2)
    assert_bad(h.ops)


def test_stale_read_with_old_revision_breaks_real_time_order() -> None:
    # served by a lagging replica: consistent with revision 1, but invoked after rev 2 acked
    h = H().put(1, "x", "a", 0, 1, 1).put(1, "x", "b", 2, 3, 2).get(2, "x", "a", 4, 5, 1)
    assert_bad(h.ops)
    assert any("real-time" in v for v in check_revisions(h.ops).violations)


def test_lost_write() -> None:
    h = H().put(1, "x", "a", 0, 1, 1).get(2, "x", None, 2, 3, 1)
    assert_bad(h.ops)


def test_lost_write_with_reused_revision() -> None:
    h = H().put(1, "x", "a", 0, 1, 1).put(2, "x", "b", 2, 3, 1).get(1, "x", "b", 4, 5, 1)
    r = check_revisions(h.ops)
    assert r.ok is False
    assert any("share revision" in v for v in r.violations)


def test_write_applied_twice() -> None:
    # a's proposal was applied again after b: revision 3 belongs to no client
    h = H().put(1, "x", "a", 0, 1, 1).put(2, "x", "b", 2, 3, 2).get(1, "x", "a", 10, 11, 3)
    assert_bad(h.ops)


def test_write_applied_twice_invisible_to_reads_is_a_revision_gap() -> None:
    h = H().put(1, "x", "a", 0, 1, 1).put(2, "x", "b", 2, 3, 3).get(1, "x", "b", 4, 5, 3)
    r = check_revisions(h.ops)
    assert r.ok is False
    assert any("created by no acknowledged write" in v for v in r.violations)
    assert check_revisions(h.ops, strict_gaps=False).ok is True
    assert check_wgl(h.ops).ok is True  # without revisions this one is invisible


def test_real_time_order_violated_between_writes() -> None:
    # b was invoked after a returned but was ordered before it
    # the values alone are fine (a then b), so only the revision check can see this
    h = H().put(1, "x", "a", 0, 1, 2).put(2, "x", "b", 2, 3, 1).get(1, "x", "b", 4, 5, 2)
    assert_bad(h.ops, wgl=False)
    assert any("real-time" in v for v in check_revisions(h.ops).violations)


def test_real_time_order_violated_read_before_write() -> None:
    h = H().put(1, "x", "a", 0, 1, 1).get(2, "x", None, 2, 3, 0)
    assert_bad(h.ops)
    assert any("real-time" in v for v in check_revisions(h.ops).violations)


def test_cas_that_should_have_failed() -> None:
    h = H().put(1, "x", "a", 0, 1, 1).cas(2, "x", None, "b", 2, 3, True, 2)
    assert_bad(h.ops)


def test_cas_that_should_have_succeeded() -> None:
    h = H().put(1, "x", "a", 0, 1, 1).cas(2, "x", "a", "b", 2, 3, False, 1)
    assert_bad(h.ops)


def test_read_of_a_value_never_written() -> None:
    h = H().put(1, "x", "a", 0, 1, 1).get(2, "x", "zzz", 2, 3, 1)
    assert_bad(h.ops)
    assert any("no write produced" in v for v in check_revisions(h.ops).violations)


def test_read_of_a_failed_write() -> None:
    h = H().failed(1, "x", "a", 0, 1).get(2, "x", "a", 2, 3, 1)
    assert_bad(h.ops)


def test_indeterminate_write_seen_twice_around_another_write() -> None:
    # an unknown write takes effect at most once: it cannot reappear after being overwritten
    h = H().put(1, "x", "a", 0, None).get(2, "x", "a", 5, 6, 1).put(2, "x", "b", 7, 8, 2)
    h.get(2, "x", "a", 9, 10, 3)
    assert_bad(h.ops)


def test_indeterminate_write_seen_before_it_was_invoked() -> None:
    h = H().get(2, "x", "a", 0, 1, 1).put(1, "x", "a", 2, None)
    assert_bad(h.ops, rev=False)  # the revision check has no call time for revision 1
    assert check_wgl(h.ops).ok is False


def test_indeterminate_write_flickers() -> None:
    # seen, then gone (with no other write to that key), then seen again
    h = H().put(1, "x", "a", 0, None).get(2, "x", "a", 1, 2, 1).get(2, "x", None, 3, 4, 1)
    assert_bad(h.ops)


def test_wgl_reports_budget_exhaustion_as_inconclusive() -> None:
    h = H()
    for i in range(12):
        h.put(i, "x", f"v{i}", 0, 100)
    h.get(99, "x", "nope", 101, 102)
    res = check_wgl(h.ops, max_steps=50)
    assert res.ok is None
    assert bool(res)  # inconclusive is not a failure
    assert "budget" in res.report()


# ----------------------------------------------------------------- generated histories


def _random_linearizable(rng: random.Random, n_ops: int, n_clients: int) -> list[Op]:
    """A history from an atomic register: each op takes effect at a random point inside
    its interval; some writes lose their response (UNKNOWN) and then took effect or not."""
    plans: list[tuple[float, Op]] = []  # (linearization point, op skeleton)
    free_at = [0.0] * n_clients
    for i in range(n_ops):
        c = rng.randrange(n_clients)
        call = free_at[c] + rng.random() * 3
        ret = call + rng.random() * 6
        free_at[c] = ret
        kind = rng.choice([Kind.PUT, Kind.GET, Kind.CAS])
        skel = Op(i, c, kind, rng.choice("xy"), call, ret, OK, value=f"v{i}")
        plans.append((rng.uniform(call, ret), skel))
    state: dict[str, str | None] = {}
    revision = 0
    out: list[Op] = []
    for _point, op in sorted(plans, key=lambda p: p[0]):
        cur = state.get(op.key)
        lost = op.kind is not Kind.GET and rng.random() < 0.15
        took_effect = not lost or rng.random() < 0.5
        if op.kind is Kind.GET:
            out.append(replace(op, value=None, result=cur, revision=revision))
            continue
        expected = (cur if rng.random() < 0.6 else "other") if op.kind is Kind.CAS else None
        wrote = took_effect and (op.kind is Kind.PUT or expected == cur)
        if wrote:
            state[op.key] = op.value
            revision += 1
        if lost:
            out.append(replace(op, ret=None, status=UNKNOWN, expected=expected))
        else:
            succeeded = wrote if op.kind is Kind.CAS else None
            out.append(replace(op, expected=expected, succeeded=succeeded, revision=revision))
    return sorted(out, key=lambda o: o.id)


@pytest.mark.parametrize("seed", range(40))
def test_generated_linearizable_histories_pass(seed: int) -> None:
    ops = _random_linearizable(random.Random(seed), 40, 4)
    assert_good(ops)


def test_generated_corrupted_histories_fail() -> None:
    """Corrupt one read in otherwise linearizable histories: both checkers catch most."""
    caught_rev = caught_wgl = tried = 0
    for seed in range(60):
        rng = random.Random(1000 + seed)
        ops = _random_linearizable(rng, 30, 3)
        gets = [o for o in ops if o.kind is Kind.GET and o.result is not None]
        if not gets:
            continue
        victim = rng.choice(gets)
        tried += 1
        bad = [replace(o, result="never-written") if o.id == victim.id else o for o in ops]
        caught_rev += check_revisions(bad).ok is False
        caught_wgl += check_wgl(bad).ok is False
    assert tried >= 30
    assert caught_rev == tried
    assert caught_wgl == tried


def test_check_history_combines_both() -> None:
    good = H().put(1, "x", "a", 0, 1, 1).get(2, "x", "a", 2, 3, 1).ops
    assert check_history(good).ok is True
    bad = H().put(1, "x", "a", 0, 1, 1).get(2, "x", None, 2, 3, 1).ops
    res = check_history(bad)
    assert res.ok is False
    assert "NOT linearizable" in res.report()


# ----------------------------------------------------------------- recorder


def test_recorder_builds_a_history() -> None:
    rec = Recorder()
    a = rec.invoke(1, Kind.PUT, "x", 0.0, value="a")
    b = rec.invoke(2, Kind.GET, "x", 0.5)
    rec.ok(a, 1.0, revision=1)
    rec.ok(b, 2.0, result="a", revision=1)
    c = rec.invoke(1, Kind.CAS, "x", 3.0, expected="a", value="b")
    d = rec.invoke(2, Kind.PUT, "y", 3.0, value="q")
    rec.fail(d, 3.5)
    assert rec.in_flight(1) == c
    ops = rec.history()
    assert [o.status for o in ops] == [OK, OK, UNKNOWN, FAIL]
    assert ops[2].ret is None
    assert check_history(ops).ok is True
    assert "cas x a->b -> unknown" in format_history(ops)


def test_recorder_rejects_misuse() -> None:
    rec = Recorder()
    a = rec.invoke(1, Kind.PUT, "x", 0.0, value="a")
    with pytest.raises(HistoryError):
        rec.invoke(1, Kind.GET, "x", 0.1)
    with pytest.raises(HistoryError):
        rec.ok(a, -1.0, revision=1)
    rec.unknown(a)
    with pytest.raises(HistoryError):
        rec.ok(a, 2.0, revision=1)
    b = rec.invoke(1, Kind.CAS, "x", 3.0, expected=None, value="c")
    with pytest.raises(HistoryError):
        rec.ok(b, 4.0)  # a CAS response says whether it succeeded
