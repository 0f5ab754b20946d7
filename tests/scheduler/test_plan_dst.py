"""Fire instants across DST transitions (New York, Berlin, exotic zones), checked against
a minute-by-minute oracle."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.plan import (
    CronSchedule,
    Timetable,
    parse_occurrence_id,
    parse_schedule,
)
from tests.scheduler.plan_util import BERLIN, NY, fires, local, utc

# ------------------------------------------------------------------ DST: New York


def test_ny_spring_forward_fixed_time_fires_once_at_end_of_gap() -> None:
    # 2026-03-08 02:00 EST → 03:00 EDT (07:00Z); 02:30 does not exist that day.
    got = fires("30 2 * * *", NY, "2026-03-06T12:00", "2026-03-10T12:00")
    assert local(got, NY) == ["03-07 02:30:00 EST", "03-08 03:00:00 EDT", "03-09 02:30:00 EDT",
                              "03-10 02:30:00 EDT"]
    assert got[1] == "20260308T070000Z"


def test_ny_spring_forward_gap_times_collapse_into_one_run() -> None:
    # 02:00, 02:30 (gap) and 03:00 (right after it) are all one run at 03:00 EDT
    got = fires("0,30 2,3 * * *", NY, "2026-03-08T05:00", "2026-03-08T09:00")
    assert local(got, NY) == ["03-08 03:00:00 EDT", "03-08 03:30:00 EDT"]


def test_ny_spring_forward_interval_style_follows_real_time() -> None:
    got = fires("*/15 * * * *", NY, "2026-03-08T06:00", "2026-03-08T07:30")
    assert local(got, NY) == ["03-08 01:15:00 EST", "03-08 01:30:00 EST", "03-08 01:45:00 EST",
                              "03-08 03:00:00 EDT", "03-08 03:15:00 EDT", "03-08 03:30:00 EDT"]
    # every 15 real minutes: no duplicate, no hole
    ts = [parse_occurrence_id(i) for i in got]
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(ts))
    # an hourly job runs every real hour; 02:00 EST simply isn't there
    got = fires("0 * * * *", NY, "2026-03-08T04:30", "2026-03-08T08:30")
    assert local(got, NY) == ["03-08 00:00:00 EST", "03-08 01:00:00 EST", "03-08 03:00:00 EDT",
                              "03-08 04:00:00 EDT"]


def test_ny_spring_forward_seconds_granularity() -> None:
    got = fires("*/20 * * * * *", NY, "2026-03-08T06:59:00", "2026-03-08T07:01:00")
    assert local(got, NY) == ["03-08 01:59:20 EST", "03-08 01:59:40 EST", "03-08 03:00:00 EDT",
                              "03-08 03:00:20 EDT", "03-08 03:00:40 EDT", "03-08 03:01:00 EDT"]
    # a fixed second in the gap fires once at the end of it
    got = fires("15 30 2 * * *", NY, "2026-03-08T00:00", "2026-03-09T00:00")
    assert local(got, NY) == ["03-08 03:00:00 EDT"]


def test_ny_fall_back_fixed_time_fires_once_at_first_occurrence() -> None:
    # 2026-11-01 02:00 EDT → 01:00 EST (06:00Z): 01:00-01:59 happens twice.
    got = fires("30 1 * * *", NY, "2026-10-31T00:00", "2026-11-03T00:00")
    assert local(got, NY) == ["10-31 01:30:00 EDT", "11-01 01:30:00 EDT", "11-02 01:30:00 EST"]
    assert got[1] == "20261101T053000Z"
    # asking from inside the second pass does not fire the repeat
    tt = Timetable.parse("30 1 * * *", NY)
    assert tt.next_after(utc("2026-11-01T06:10:00")) == utc("2026-11-02T06:30:00")
    # a time outside the fold is unaffected
    got = fires("30 2 * * *", NY, "2026-10-31T12:00", "2026-11-02T12:00")
    assert local(got, NY) == ["11-01 02:30:00 EST", "11-02 02:30:00 EST"]


def test_ny_fall_back_interval_style_fires_at_every_real_instant() -> None:
    got = fires("*/15 * * * *", NY, "2026-11-01T04:50", "2026-11-01T07:20")
    assert local(got, NY) == [
        "11-01 01:00:00 EDT", "11-01 01:15:00 EDT", "11-01 01:30:00 EDT", "11-01 01:45:00 EDT",
        "11-01 01:00:00 EST", "11-01 01:15:00 EST", "11-01 01:30:00 EST", "11-01 01:45:00 EST",
        "11-01 02:00:00 EST", "11-01 02:15:00 EST"]
    ts = [parse_occurrence_id(i) for i in got]
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(ts))
    got = fires("0 * * * *", NY, "2026-11-01T04:30", "2026-11-01T07:30")
    assert got == ["20261101T050000Z", "20261101T060000Z", "20261101T070000Z"]


def test_ny_fall_back_seconds_granularity() -> None:
    got = fires("*/30 * * * * *", NY, "2026-11-01T05:59:00", "2026-11-01T06:01:00")
    assert local(got, NY) == ["11-01 01:59:30 EDT", "11-01 01:00:00 EST", "11-01 01:00:30 EST",
                              "11-01 01:01:00 EST"]
    got = fires("10 30 1 * * *", NY, "2026-11-01T00:00", "2026-11-02T00:00")
    assert local(got, NY) == ["11-01 01:30:10 EDT"]


# ------------------------------------------------------------------ DST: Berlin


def test_berlin_spring_forward() -> None:
    # 2026-03-29 02:00 CET → 03:00 CEST at 01:00Z
    got = fires("30 2 * * *", BERLIN, "2026-03-28T00:00", "2026-03-31T00:00")
    assert local(got, BERLIN) == ["03-28 02:30:00 CET", "03-29 03:00:00 CEST",
                                  "03-30 02:30:00 CEST"]
    assert got[1] == "20260329T010000Z"
    got = fires("*/30 * * * *", BERLIN, "2026-03-29T00:00", "2026-03-29T01:30")
    assert local(got, BERLIN) == ["03-29 01:30:00 CET", "03-29 03:00:00 CEST",
                                  "03-29 03:30:00 CEST"]
    got = fires("0 * * * * *", BERLIN, "2026-03-29T00:58:30", "2026-03-29T01:01:00")
    assert local(got, BERLIN) == ["03-29 01:59:00 CET", "03-29 03:00:00 CEST",
                                  "03-29 03:01:00 CEST"]


def test_berlin_fall_back() -> None:
    # 2026-10-25 03:00 CEST → 02:00 CET at 01:00Z: 02:00-02:59 happens twice
    got = fires("30 2 * * *", BERLIN, "2026-10-24T00:00", "2026-10-27T00:00")
    assert local(got, BERLIN) == ["10-24 02:30:00 CEST", "10-25 02:30:00 CEST",
                                  "10-26 02:30:00 CET"]
    assert got[1] == "20261025T003000Z"
    got = fires("0,30 2 * * *", BERLIN, "2026-10-24T23:00", "2026-10-25T03:00")
    assert local(got, BERLIN) == ["10-25 02:00:00 CEST", "10-25 02:30:00 CEST"]
    got = fires("*/30 * * * *", BERLIN, "2026-10-24T23:45", "2026-10-25T02:00")
    assert local(got, BERLIN) == [
        "10-25 02:00:00 CEST", "10-25 02:30:00 CEST", "10-25 02:00:00 CET",
        "10-25 02:30:00 CET", "10-25 03:00:00 CET"]
    got = fires("0 30 2 * * *", BERLIN, "2026-10-25T00:00", "2026-10-26T00:00")
    assert got == ["20261025T003000Z"]


def test_exotic_transitions() -> None:
    # Santiago: midnight does not exist on 2026-09-06, @daily runs at 01:00 instead
    got = fires("@daily", "America/Santiago", "2026-09-04", "2026-09-08")
    assert local(got, "America/Santiago") == [
        "09-04 00:00:00 -04", "09-05 00:00:00 -04", "09-06 01:00:00 -03", "09-07 00:00:00 -03"]
    # Samoa skipped 2011-12-30 entirely: its noon run happens once, at the end of the gap
    got = fires("0 12 * * *", "Pacific/Apia", "2011-12-28", "2011-12-31")
    assert local(got, "Pacific/Apia") == [
        "12-28 12:00:00 -10", "12-29 12:00:00 -10", "12-31 00:00:00 +14", "12-31 12:00:00 +14"]
    # Lord Howe falls back by 30 minutes: fixed-time once, interval-style at every instant
    got = fires("45 1 * * *", "Australia/Lord_Howe", "2026-04-04T00:00", "2026-04-06T00:00")
    assert local(got, "Australia/Lord_Howe") == ["04-05 01:45:00 +11", "04-06 01:45:00 +1030"]
    got = fires("*/15 1 * * *", "Australia/Lord_Howe", "2026-04-04T14:00", "2026-04-04T16:00")
    assert local(got, "Australia/Lord_Howe") == [
        "04-05 01:15:00 +11", "04-05 01:30:00 +11", "04-05 01:45:00 +11",
        "04-05 01:30:00 +1030", "04-05 01:45:00 +1030"]


def test_at_transition_boundaries_exactly() -> None:
    tt = Timetable.parse("30 2 * * *", NY)
    # one second before the gap ends → the gap run; exactly at it → already past
    assert tt.next_after(utc("2026-03-08T06:59:59")) == utc("2026-03-08T07:00:00")
    assert tt.next_after(utc("2026-03-08T07:00:00")) == utc("2026-03-09T06:30:00")
    # from a wall time whose fold repeat is still ahead, interval-style fires the repeat
    tt = Timetable.parse("5 * * * *", NY)
    assert tt.next_after(utc("2026-11-01T05:50:00")) == utc("2026-11-01T06:05:00")


def test_no_fire_twice_at_one_instant_and_strictly_increasing() -> None:
    for tz in (NY, BERLIN, "Australia/Lord_Howe", "UTC"):
        for expr in ("*/7 * * * *", "0,30 1-3 * * *", "30 2 * * *", "*/13 * 2 * * *"):
            xs = list(Timetable.parse(expr, tz).between(utc("2026-03-07"), utc("2026-03-10")))
            xs += Timetable.parse(expr, tz).between(utc("2026-03-28"), utc("2026-03-30"))
            xs += Timetable.parse(expr, tz).between(utc("2026-10-24"), utc("2026-10-26"))
            xs += Timetable.parse(expr, tz).between(utc("2026-10-31"), utc("2026-11-02"))
            assert all(a < b for a, b in itertools.pairwise(xs)), (tz, expr)


# An independent oracle for the DST rules, minute by minute over real time.

def oracle(expr: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    sched = parse_schedule(expr)
    assert isinstance(sched, CronSchedule)
    zone = ZoneInfo(tz)

    def matches(w: datetime) -> bool:
        return (w.month in sched.months and sched.day_matches(w) and w.hour in sched.hours
                and w.minute in sched.minutes)

    out = []
    t = start + timedelta(minutes=1)
    seen_walls: set[datetime] = set()
    while t <= end:
        prev, cur = (t - timedelta(minutes=1)).astimezone(zone), t.astimezone(zone)
        wall = cur.replace(tzinfo=None)
        fire = matches(wall)
        if sched.fixed_time:
            fire = fire and wall not in seen_walls
            gap = cur.utcoffset() - prev.utcoffset()  # type: ignore[operator]
            if gap > timedelta(0):  # t is the end of a gap: did a missing wall match?
                w0 = (prev + timedelta(minutes=1)).replace(tzinfo=None)  # first missing wall
                fire = fire or any(matches(w0 + timedelta(minutes=i))
                                   for i in range(int(gap / timedelta(minutes=1))))
        seen_walls.add(wall)
        if fire:
            out.append(t)
        t += timedelta(minutes=1)
    return out


_field = st.sampled_from(["*", "*/5", "*/15", "0", "30", "0,30", "10-20/5", "59"])
_hour = st.sampled_from(["*", "*/2", "1", "2", "3", "1-3", "0,2", "2,3", "*/3"])


@settings(max_examples=30, deadline=None)
@given(minute=_field, hour=_hour, tz=st.sampled_from([NY, BERLIN]),
       window=st.sampled_from([("2026-03-08T03:00", "2026-03-08T11:00"),
                               ("2026-11-01T02:00", "2026-11-01T10:00"),
                               ("2026-03-28T22:00", "2026-03-29T05:00"),
                               ("2026-10-24T21:00", "2026-10-25T05:00")]))
def test_dst_rules_match_minute_by_minute_oracle(minute: str, hour: str, tz: str,
                                                 window: tuple[str, str]) -> None:
    expr = f"{minute} {hour} * * *"
    start, end = utc(window[0]), utc(window[1])
    # start the oracle a day earlier so its "already seen this wall" memory is warm
    want = [x for x in oracle(expr, tz, start - timedelta(days=1), end) if x > start]
    assert Timetable.parse(expr, tz).between(start, end) == want
