"""Fire instants, day matching, @every, misfire/catch-up, rendezvous ranking, tags."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.errors import ScheduleError
from scheduler.plan import (
    CronSchedule,
    EverySchedule,
    Timetable,
    catch_up,
    eligible_workers,
    format_duration,
    occurrence_id,
    parse_duration,
    parse_occurrence_id,
    parse_schedule,
    rank_workers,
    rendezvous_score,
    tags_match,
)
from tests.scheduler.plan_util import BERLIN, NY, fires, utc

# ------------------------------------------------------------------ parsing, ids, durations


def test_parse_schedule_kinds() -> None:
    s = parse_schedule("*/15 9-17 * * mon-fri")
    assert isinstance(s, CronSchedule)
    assert s.seconds == (0,)
    assert s.minutes == (0, 15, 30, 45)
    assert s.hours == tuple(range(9, 18))
    assert s.weekdays == (1, 2, 3, 4, 5)
    assert not s.fixed_time
    assert parse_schedule("30 2 * * *").fixed_time  # type: ignore[union-attr]
    assert not parse_schedule("@hourly").fixed_time  # type: ignore[union-attr]
    assert parse_schedule("@daily").fixed_time  # type: ignore[union-attr]
    assert parse_schedule("0 * * * * 7").weekdays == (0,)  # type: ignore[union-attr]
    six = parse_schedule("*/20 * * * * *")
    assert isinstance(six, CronSchedule)
    assert six.seconds == (0, 20, 40)
    assert parse_schedule("@every 1h30m") == EverySchedule("@every 1h30m", 5400)
    with pytest.raises(ScheduleError, match="out of range"):
        parse_schedule("0 0 32 * *")


def test_durations_parse_and_format() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration("45") == 45
    assert format_duration(5400) == "1h30m"
    assert format_duration(0) == "0s"
    assert format_duration(90061) == "1d1h1m1s"
    for bad in ("", "1x", "m", "5m1h", "1.5h", "-5"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_occurrence_ids() -> None:
    t = datetime(2026, 11, 22, 1, 30, 0, tzinfo=UTC)
    assert occurrence_id(t) == "20261122T013000Z"
    assert occurrence_id(t.astimezone(ZoneInfo(BERLIN))) == "20261122T013000Z"
    assert parse_occurrence_id("20261122T013000Z") == utc("2026-11-22T01:30:00")
    # A fraction (an @every phase) is kept to the millisecond; finer ones are floored.
    frac = t.replace(microsecond=250_999)
    assert occurrence_id(frac) == "20261122T013000.250Z"
    assert occurrence_id(t.replace(microsecond=999)) == "20261122T013000Z"
    assert parse_occurrence_id("20261122T013000.250Z") == t.replace(microsecond=250_000)
    for bad in ("2026-11-22T01:30:00Z", "20261122T013000.25Z", "20261122T013000.Z",
                "20261122T013000.2500Z", "20261122T013000"):
        with pytest.raises(ValueError):
            parse_occurrence_id(bad)
    with pytest.raises(ValueError):
        occurrence_id(datetime(2026, 1, 1))  # naive instants are refused


def test_occurrence_ids_of_both_kinds_sort_by_time() -> None:
    """History lists a job's runs newest first by instant, though a whole-second id (cron,
    or an older version's) sorts after a fractional one of the same second as text; ids a
    user types are spelled canonically before they are matched."""
    from scheduler.plan import normalize_occurrence, occurrence_sort_key

    ids = ["20261122T013004Z-manual-ab12", "20261122T013004.250Z", "20261122T013003.900Z",
           "20261122T013004Z", "20261122T013004.100Z-manual-0001", "garbage"]
    assert sorted(ids, key=occurrence_sort_key) == [
        "garbage", "20261122T013003.900Z", "20261122T013004Z", "20261122T013004Z-manual-ab12",
        "20261122T013004.100Z-manual-0001", "20261122T013004.250Z"]
    assert normalize_occurrence("20261122T013004.000Z") == "20261122T013004Z"
    assert normalize_occurrence("20261122T013004.250Z-manual-ab12") == (
        "20261122T013004.250Z-manual-ab12")
    with pytest.raises(ValueError):
        normalize_occurrence("yesterday")


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
def test_occurrence_ids_sort_like_time(naive: datetime) -> None:
    a = naive.replace(microsecond=0, tzinfo=UTC)
    b = a + timedelta(seconds=1)
    assert occurrence_id(a) < occurrence_id(b)
    assert parse_occurrence_id(occurrence_id(a)) == a
    # The instants of one @every job share their fraction: their ids sort like time too.
    frac = timedelta(milliseconds=naive.microsecond // 1000 or 1)
    assert occurrence_id(a + frac) < occurrence_id(b + frac)
    assert parse_occurrence_id(occurrence_id(a + frac)) == a + frac


# ------------------------------------------------------------------ plain (UTC) cron


def test_next_after_is_strict_and_in_utc() -> None:
    tt = Timetable.parse("*/15 * * * *")
    assert tt.next_after(utc("2026-11-22T01:30:00")) == utc("2026-11-22T01:45:00")
    assert tt.next_after(utc("2026-11-22T01:29:59.5")) == utc("2026-11-22T01:30:00")
    nxt = tt.next_after(utc("2026-11-22T01:30:00"))
    assert nxt is not None
    assert nxt.tzinfo is UTC


def test_day_of_month_or_day_of_week_like_vixie() -> None:
    # both restricted → either matches; 2026-11-13 is a Friday, 2026-11-15 the 15th
    got = fires("0 0 15 * fri", "UTC", "2026-11-01", "2026-11-30")
    assert got == ["20261106T000000Z", "20261113T000000Z", "20261115T000000Z",
                   "20261120T000000Z", "20261127T000000Z"]
    # day-of-month is * → only the weekday restricts
    assert len(fires("0 0 * * fri", "UTC", "2026-11-01", "2026-11-30")) == 4


def test_leap_day_and_macros() -> None:
    assert fires("0 0 29 2 *", "UTC", "2026-01-01", "2029-01-01") == ["20280229T000000Z"]
    assert fires("@yearly", "UTC", "2026-06-01", "2028-06-01") == [
        "20270101T000000Z", "20280101T000000Z"]
    assert fires("@weekly", "UTC", "2026-11-20", "2026-11-30") == ["20261122T000000Z",
                                                                   "20261129T000000Z"]
    assert len(fires("@hourly", "UTC", "2026-11-22", "2026-11-23")) == 24


def test_six_field_seconds() -> None:
    assert fires("*/20 * * * * *", "UTC", "2026-11-22T00:00:00", "2026-11-22T00:01:00") == [
        "20261122T000020Z", "20261122T000040Z", "20261122T000100Z"]
    assert fires("5 30 2 * * *", "UTC", "2026-11-22", "2026-11-23") == ["20261122T023005Z"]


# ------------------------------------------------------------------ day matching

_days = st.sampled_from(["*", "1", "15", "31", "1-7", "*/10", "29,30,31", "13"])
_months = st.sampled_from(["*", "2", "feb", "1-3", "*/4", "jun,dec", "4,6,9,11"])
_dows = st.sampled_from(["*", "0", "7", "mon-fri", "fri", "sat,sun", "1/3", "?"])


@settings(max_examples=60, deadline=None)
@given(day=_days, month=_months, dow=_dows, start=st.integers(2020, 2030))
def test_day_matching_against_a_brute_force_calendar(day: str, month: str, dow: str,
                                                     start: int) -> None:
    def values(field: str, lo: int, hi: int, names: dict[str, int]) -> set[int]:
        out: set[int] = set()
        for part in field.split(","):
            base, _, step = part.partition("/")
            if base in ("*", "?"):
                a, b = lo, hi
            elif "-" in base:
                a, b = (names.get(x, 0) or int(x) for x in base.split("-"))
            else:
                a = names.get(base, 0) or int(base)
                b = hi if step else a
            out.update(range(a, b + 1, int(step or 1)))
        return out

    doms = values(day, 1, 31, {})
    months = values(month, 1, 12, {"feb": 2, "jun": 6, "dec": 12})
    dows = {d % 7 for d in values(dow, 0, 7, {"mon": 1, "fri": 5, "sat": 6, "sun": 7})}
    both = not day.startswith(("*", "?")) and not dow.startswith(("*", "?"))
    want = []
    d = datetime(start, 1, 1, tzinfo=UTC)
    while d.year < start + 2:
        dom_ok, dow_ok = d.day in doms, (d.isoweekday() % 7) in dows
        if d.month in months and ((dom_ok or dow_ok) if both else (dom_ok and dow_ok)):
            want.append(d)
        d += timedelta(days=1)
    expr = f"0 0 {day} {month} {dow}"
    try:
        tt = Timetable.parse(expr)
    except ScheduleError as exc:
        assert "never fires" in str(exc)
        return
    got = tt.between(datetime(start, 1, 1, tzinfo=UTC) - timedelta(seconds=1),
                     datetime(start + 2, 1, 1, tzinfo=UTC) - timedelta(seconds=1))
    assert got == want, expr


# ------------------------------------------------------------------ @every


def test_every_is_anchored_to_the_epoch() -> None:
    tt = Timetable.parse("@every 7m", BERLIN)
    a = tt.next_after(utc("2026-11-22T01:30:00"))
    assert a is not None
    assert int(a.timestamp()) % 420 == 0
    assert a - utc("2026-11-22T01:30:00") <= timedelta(minutes=7)
    # whoever asks, from wherever, gets the same instants
    b = Timetable.parse("@every 7m", "UTC").next_after(a - timedelta(seconds=47))
    assert a == b
    assert fires("@every 5s", NY, "2026-11-22T00:00:00", "2026-11-22T00:00:15") == [
        "20261122T000005Z", "20261122T000010Z", "20261122T000015Z"]


def test_every_ignores_dst() -> None:
    for start, end in (("2026-03-08T06:00", "2026-03-08T08:00"),
                       ("2026-11-01T05:00", "2026-11-01T07:00")):
        xs = Timetable.parse("@every 10m", NY).between(utc(start), utc(end))
        assert len(xs) == 12
        assert all(b - a == timedelta(minutes=10) for a, b in itertools.pairwise(xs))


@given(interval=st.integers(1, 10**6), t=st.integers(0, 4 * 10**9))
def test_every_property(interval: int, t: int) -> None:
    tt = Timetable(EverySchedule(f"@every {interval}", interval), ZoneInfo("UTC"))
    after = datetime.fromtimestamp(t, UTC)
    nxt = tt.next_after(after)
    assert nxt is not None
    n = int(nxt.timestamp())
    assert n % interval == 0
    assert t < n <= t + interval


# ------------------------------------------------------------------ misfire / catch-up


def test_catch_up_nothing_missed() -> None:
    tt = Timetable.parse("*/5 * * * *")
    cu = catch_up(tt, since=utc("2026-11-22T01:00"), now=utc("2026-11-22T01:04:59"),
                  starting_deadline=60)
    assert cu.run is None
    assert cu.missed == ()
    assert not cu.more_missed
    assert cu.next_fire == utc("2026-11-22T01:05")


def test_catch_up_runs_latest_within_deadline_and_records_the_rest() -> None:
    tt = Timetable.parse("*/5 * * * *")
    cu = catch_up(tt, since=utc("2026-11-22T01:00"), now=utc("2026-11-22T01:20:30"),
                  starting_deadline=60)
    assert cu.run == utc("2026-11-22T01:20")
    assert [occurrence_id(x) for x in cu.missed] == [
        "20261122T010500Z", "20261122T011000Z", "20261122T011500Z"]
    assert not cu.more_missed
    assert cu.next_fire == utc("2026-11-22T01:25")


def test_catch_up_latest_too_old_is_missed_too() -> None:
    tt = Timetable.parse("*/5 * * * *")
    cu = catch_up(tt, since=utc("2026-11-22T01:00"), now=utc("2026-11-22T01:12"),
                  starting_deadline=60)
    assert cu.run is None
    assert cu.missed == (utc("2026-11-22T01:05"), utc("2026-11-22T01:10"))
    # due exactly now, or exactly at the deadline, still runs
    cu = catch_up(tt, since=utc("2026-11-22T01:00"), now=utc("2026-11-22T01:11"),
                  starting_deadline=60)
    assert cu.run == utc("2026-11-22T01:10")


def test_catch_up_long_outage_is_bounded() -> None:
    # a week of every-second occurrences: only the latest max_missed are listed (no K8s-style
    # "too many missed" cliff: the latest still runs)
    tt = Timetable.parse("* * * * * *")
    cu = catch_up(tt, since=utc("2026-11-15T00:00"), now=utc("2026-11-22T00:00"),
                  starting_deadline=10, max_missed=50)
    assert cu.run == utc("2026-11-22T00:00")
    assert len(cu.missed) == 50
    assert cu.missed[-1] == utc("2026-11-21T23:59:59")
    assert cu.more_missed
    cu = catch_up(tt, since=utc("2026-11-21T23:59:55"), now=utc("2026-11-22T00:00"),
                  starting_deadline=10, max_missed=4)
    assert len(cu.missed) == 4
    assert not cu.more_missed
    tt = Timetable.parse("*/2 * * * * *")
    cu = catch_up(tt, since=utc("2026-11-21T23:59:49"), now=utc("2026-11-22T00:00:01"),
                  starting_deadline=0, max_missed=4)
    assert cu.run is None
    assert [x.second for x in cu.missed] == [54, 56, 58, 0]
    assert cu.more_missed


def test_catch_up_rare_schedule_looks_far_back() -> None:
    tt = Timetable.parse("@yearly")
    cu = catch_up(tt, since=utc("2020-06-01"), now=utc("2026-11-22"), starting_deadline=60)
    assert cu.run is None
    assert [x.year for x in cu.missed] == [2021, 2022, 2023, 2024, 2025, 2026]


def test_edited_schedule_never_fires_retroactively() -> None:
    # last run at 01:00; at 01:30 the schedule is edited to */5 (which "would" have fired at
    # 01:05 ... 01:30); now is 01:30:10 — nothing before the edit may fire or be recorded.
    tt = Timetable.parse("*/5 * * * *")
    cu = catch_up(tt, since=utc("2026-11-22T01:00"), edited_at=utc("2026-11-22T01:30:00"),
                  now=utc("2026-11-22T01:30:10"), starting_deadline=60)
    assert cu.run is None
    assert cu.missed == ()
    assert cu.next_fire == utc("2026-11-22T01:35")
    cu = catch_up(tt, since=utc("2026-11-22T01:00"), edited_at=utc("2026-11-22T01:30:00"),
                  now=utc("2026-11-22T01:35:10"), starting_deadline=60)
    assert cu.run == utc("2026-11-22T01:35")
    assert cu.missed == ()


def test_catch_up_since_in_future_is_a_no_op() -> None:
    tt = Timetable.parse("*/5 * * * *")
    cu = catch_up(tt, since=utc("2026-11-22T02:00"), now=utc("2026-11-22T01:00"),
                  starting_deadline=60)
    assert (cu.run, cu.missed) == (None, ())


# ------------------------------------------------------------------ rendezvous and tags

_workers = st.lists(st.from_regex(r"w[0-9a-z]{1,6}", fullmatch=True), min_size=1,
                    max_size=12, unique=True)
_occ = st.integers(0, 10**6).map(lambda n: occurrence_id(datetime.fromtimestamp(n * 60, UTC)))


def test_rendezvous_is_stable_across_processes() -> None:
    # pinned values: BLAKE2b of the inputs, never Python's randomised hash()
    assert rendezvous_score("backup", "20261122T013000Z", "w1") == rendezvous_score(
        "backup", "20261122T013000Z", "w1")
    ranked = rank_workers("backup", "20261122T013000Z", ["w1", "w2", "w3"])
    assert ranked == rank_workers("backup", "20261122T013000Z", ["w3", "w1", "w2", "w1"])
    import subprocess
    import sys
    code = ("from scheduler.plan import rank_workers;"
            "print(','.join(rank_workers('backup','20261122T013000Z',['w1','w2','w3'])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "123"}, cwd=".")
    assert out.stdout.strip() == ",".join(ranked)


@settings(max_examples=50)
@given(workers=_workers, job=st.text(min_size=1, max_size=10), occ=_occ)
def test_rank_is_deterministic_permutation(workers: list[str], job: str, occ: str) -> None:
    ranked = rank_workers(job, occ, workers)
    assert sorted(ranked) == sorted(workers)
    assert rank_workers(job, occ, list(reversed(workers))) == ranked


@settings(max_examples=50)
@given(workers=_workers, occs=st.lists(_occ, min_size=1, max_size=10), data=st.data())
def test_removing_a_worker_only_moves_its_items(workers: list[str], occs: list[str],
                                                data: st.DataObject) -> None:
    gone = data.draw(st.sampled_from(workers))
    rest = [w for w in workers if w != gone]
    for occ in occs:
        before = rank_workers("job", occ, workers)
        after = rank_workers("job", occ, rest)
        assert after == [w for w in before if w != gone]  # others keep their relative order
        if before[0] != gone and rest:
            assert after[0] == before[0]


def test_rendezvous_spreads_work() -> None:
    workers = [f"w{i}" for i in range(4)]
    counts = dict.fromkeys(workers, 0)
    start = utc("2026-11-22")
    for i in range(2000):
        counts[rank_workers("job", occurrence_id(start + timedelta(seconds=5 * i)),
                            workers)[0]] += 1
    assert all(350 < c < 650 for c in counts.values()), counts


def test_tags_match_and_eligible_workers() -> None:
    assert tags_match({}, {})
    assert tags_match({}, {"disk": "ssd"})
    assert tags_match({"disk": "ssd"}, {"disk": "ssd", "zone": "a"})
    assert not tags_match({"disk": "ssd"}, {"disk": "hdd"})
    assert not tags_match({"disk": "ssd"}, {})
    assert not tags_match({"disk": "ssd", "zone": "a"}, {"disk": "ssd"})
    workers = {"w1": {"disk": "ssd"}, "w2": {}, "w3": {"disk": "ssd", "zone": "a"}}
    assert eligible_workers({"disk": "ssd"}, workers) == ["w1", "w3"]
    assert eligible_workers({}, workers) == ["w1", "w2", "w3"]


def test_every_is_spread_by_job_name_but_stable_across_workers() -> None:
    """A job's @every phase is a stable hash of its name, to the millisecond: every worker
    computes the same instants, consecutive fires are exactly one interval apart, and many
    jobs on the same interval spread evenly over it — no whole-second bursts (1,000 jobs on
    @every 10s: about one every 10 ms, never dozens in the same 10 ms)."""
    from collections import Counter

    from scheduler.plan import spread
    from scheduler.spec import load_jobs_text

    start = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)
    base = parse_schedule("@every 10s")
    assert spread(base, "a") == spread(base, "a")  # deterministic
    seconds: Counter[int] = Counter()
    slots: Counter[int] = Counter()
    for i in range(1000):
        tt = Timetable(spread(base, f"job{i}"), ZoneInfo("UTC"))
        a = tt.next_after(start)
        b = tt.next_after(a)
        assert a is not None and b is not None and (b - a).total_seconds() == 10
        assert start < a <= start + timedelta(seconds=10)
        assert parse_occurrence_id(occurrence_id(a)) == a
        seconds[a.second % 10] += 1
        slots[(a - start) // timedelta(milliseconds=10)] += 1
    assert len(seconds) == 10 and max(seconds.values()) < 160, seconds
    assert max(slots.values()) <= 8, slots.most_common(3)
    # A one-second interval is spread within the second too.
    one = Timetable(spread(parse_schedule("@every 1s"), "hb"), ZoneInfo("UTC"))
    x = one.next_after(start)
    assert x is not None and one.next_after(x) == x + timedelta(seconds=1)
    spec = load_jobs_text("jobs:\n  - name: hb\n    schedule: '@every 5s'\n    command: [true]\n")
    assert spec[0].timetable().schedule == spread(base.__class__("@every 5s", 5), "hb")
    assert parse_schedule("*/5 * * * * *") == spread(parse_schedule("*/5 * * * * *"), "x")


def test_every_with_a_fractional_phase_catches_up_like_whole_seconds() -> None:
    """Catch-up and ``between`` treat fractional instants exactly: ``(since, now]`` with
    ``since`` an earlier fractional occurrence excludes it, and the starting deadline is
    measured to the millisecond."""
    from scheduler.plan import EverySchedule

    tt = Timetable(EverySchedule("@every 10s", 10, phase_ms=2_500), ZoneInfo("UTC"))
    t0 = utc("2026-11-22T00:00:02.500")
    assert tt.next_after(t0 - timedelta(milliseconds=1)) == t0
    assert tt.next_after(t0) == t0 + timedelta(seconds=10)
    assert tt.between(t0, t0 + timedelta(seconds=30)) == [
        t0 + timedelta(seconds=10 * k) for k in (1, 2, 3)]
    # since = the last occurrence handled: it is not due again.
    late = t0 + timedelta(seconds=30, milliseconds=400)
    cu = catch_up(tt, since=t0, now=late, starting_deadline=0.4)
    assert cu.run == t0 + timedelta(seconds=30)
    assert [occurrence_id(x) for x in cu.missed] == [
        "20261122T000012.500Z", "20261122T000022.500Z"]
    cu = catch_up(tt, since=t0, now=late + timedelta(milliseconds=1), starting_deadline=0.4)
    assert cu.run is None and len(cu.missed) == 3
    assert cu.next_fire == t0 + timedelta(seconds=40)
