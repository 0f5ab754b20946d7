"""Our cron matcher agrees with croniter (the reference implementation we depend on) for
UTC schedules: same next fire times for generated 5-field and 6-field expressions.

DST handling is ours alone (documented in docs/scheduling.md and tested in test_plan_dst.py);
in UTC there are no transitions, so the two must agree exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.plan import Timetable


def field(lo: int, hi: int, star_step: bool = True) -> st.SearchStrategy[str]:
    """One cron field. ``star_step=False`` leaves out ``*/n``: in day-of-month and
    day-of-week, Vixie cron (and we) treat a field starting with ``*`` as unrestricted when
    combining the two, while croniter treats ``*/n`` as restricted."""
    num = st.integers(lo, hi)
    single = num.map(str)
    # a < b: croniter mis-handles one-value ranges such as "0-0" (it ignores them).
    rng = st.tuples(num, num).filter(lambda t: t[0] != t[1]).map(
        lambda t: f"{min(t)}-{max(t)}")
    bases = ["*", f"{lo}-{hi}"] if star_step else [f"{lo}-{hi}"]
    step = st.tuples(st.sampled_from(bases), st.integers(1, max(1, hi - lo)))
    return st.one_of(
        st.just("*"), single, rng, step.map(lambda t: f"{t[0]}/{t[1]}"),
        st.lists(single, min_size=2, max_size=3).map(",".join))


FIVE = st.tuples(field(0, 59), field(0, 23), field(1, 28, star_step=False), field(1, 12),
                 field(0, 6, star_step=False))
START = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC, microsecond=0))


def ours(expr: str, start: datetime, n: int) -> list[datetime]:
    tt = Timetable.parse(expr, "UTC")
    out, t = [], start
    for _ in range(n):
        nxt = tt.next_after(t)
        assert nxt is not None
        out.append(nxt)
        t = nxt
    return out


def theirs(expr: str, start: datetime, n: int, seconds_first: bool = False) -> list[datetime]:
    kwargs = {"second_at_beginning": True} if seconds_first else {}
    it = croniter(expr, start, **kwargs)
    return [it.get_next(datetime).astimezone(UTC) for _ in range(n)]


@settings(max_examples=150, deadline=None)
@given(FIVE, START)
def test_five_field_schedules_match_croniter(fields: tuple[str, ...], start: datetime) -> None:
    expr = " ".join(fields)
    assert ours(expr, start, 6) == theirs(expr, start, 6), expr


@settings(max_examples=80, deadline=None)
@given(field(0, 59), FIVE, START)
def test_six_field_schedules_match_croniter(sec: str, fields: tuple[str, ...],
                                            start: datetime) -> None:
    expr = " ".join((sec, *fields))
    assert ours(expr, start, 6) == theirs(expr, start, 6, seconds_first=True), expr


def test_macros_match_croniter() -> None:
    start = datetime(2026, 11, 22, 1, 30, 7, tzinfo=UTC)
    for macro in ("@hourly", "@daily", "@weekly", "@monthly", "@yearly"):
        assert ours(macro, start, 4) == theirs(macro, start, 4), macro
    assert ours("@every 90s", start, 2)[1] - ours("@every 90s", start, 2)[0] == timedelta(
        seconds=90)
