"""Pure scheduling: fire instants, DST rules, misfire/catch-up, worker ranking.

Nothing here reads a clock, sleeps or does I/O: every function takes the instants it needs.
Instants are whole milliseconds (finer fractions are floored) and are returned as aware UTC
``datetime`` objects. Cron schedules fire on whole seconds; only a job's ``@every`` phase
(below) puts its instants at a fraction of a second.

Schedules
---------
* cron, 5 fields ``minute hour day-of-month month day-of-week`` or 6 fields with ``second``
  first. Each field takes ``*``, ``n``, ``a-b``, ``*/s``, ``a-b/s``, ``n/s`` and comma lists;
  months and weekdays also take names (``jan``, ``mon-fri``); weekday 0 and 7 are Sunday;
  ``?`` means ``*``. As in Vixie cron, when both day-of-month and day-of-week are restricted
  (neither starts with ``*``) a day matches if *either* matches; otherwise both must.
* macros ``@yearly``/``@annually`` (``0 0 1 1 *``), ``@monthly`` (``0 0 1 * *``), ``@weekly``
  (``0 0 * * 0``), ``@daily``/``@midnight`` (``0 0 * * *``), ``@hourly`` (``0 * * * *``).
* ``@every D`` with a duration ``D`` (``30s``, ``5m``, ``1h30m``, ``90``): fires every ``D``
  seconds of real time, at ``phase + k * D`` since the Unix epoch. A job's phase is derived
  from its name (:func:`spread`: a stable hash, the same on every worker), to the
  millisecond, so many jobs on the same interval spread evenly over it instead of firing in
  bursts at whole seconds (1,000 jobs on ``@every 10s`` start about one every 10 ms, not
  100 at once every second); a bare schedule (no job) has phase 0. The anchor makes every
  worker compute the same instants whatever its start time; the job's timezone does not
  affect ``@every``.

Time zones and DST (the rules, tested in ``tests/scheduler/test_plan.py``)
-------------------------------------------------------------------------
A cron schedule is matched against wall-clock time in the job's IANA zone. Each cron
schedule is one of two kinds, decided from its text the way Vixie cron does:

* **interval-style**: the second (6-field form), minute or hour field starts with ``*``
  (``*/15 * * * *``, ``0 * * * *``, ``@hourly``, ``*/10 * * * * *``). It follows real time: a
  wall time that does not exist (spring-forward gap) is simply not there, and a wall time
  that occurs twice (fall-back fold) fires at both real instants. ``@every`` behaves the same
  (it is defined in real time anyway). So ``*/15 * * * *`` fires every 15 real minutes
  across both transitions: no duplicates, no hole.
* **fixed-time**: everything else (``30 2 * * *``, ``0 9 * * mon-fri``, ``@daily``). A wall
  time in a **gap** fires once, at the first instant after the gap (the transition instant,
  e.g. 03:00 local in New York on 2026-03-08); several gap times, and a matching time right at
  the end of the gap, all collapse into that one run. A wall time in a **fold** fires
  **once**, at its first occurrence (the earlier, pre-transition offset).

Occurrences are identified by their instant in UTC: ``20261122T013000Z`` to the second, and
``20261122T013000.250Z`` when the instant has a fraction (``@every`` phases, manual runs);
see :func:`occurrence_id`. As text, a whole-second id sorts after a fractional one of the
same second: order and age ids by :func:`occurrence_sort_key` / :func:`occurrence_instant`.

Misfires
--------
:func:`catch_up` decides what to do with occurrences that should have fired while nobody
ran them: every occurrence in ``(since, now]`` is missed except the latest one, which runs once
if it is at most ``starting_deadline`` old. ``since`` is the later of the last occurrence
handled and the time the schedule was last edited, so an edited schedule never fires
retroactively.

Workers
-------
:func:`rank_workers` orders live workers for one (job, occurrence) by rendezvous (highest
random weight) hashing with BLAKE2b, so every worker computes the same order and removing a
worker only moves the occurrences it ranked first. :func:`tags_match` says whether a worker's
tags satisfy a job's.
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import re
import zoneinfo
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scheduler.errors import ScheduleError

__all__ = [
    "MANUAL_SUFFIX",
    "CatchUp",
    "CronSchedule",
    "EverySchedule",
    "Schedule",
    "Timetable",
    "catch_up",
    "eligible_workers",
    "format_duration",
    "load_zone",
    "normalize_occurrence",
    "occurrence_id",
    "occurrence_instant",
    "occurrence_sort_key",
    "parse_duration",
    "parse_occurrence_id",
    "parse_schedule",
    "rank_workers",
    "rendezvous_score",
    "spread",
    "tags_match",
]

# --------------------------------------------------------------------------- durations

_DURATION_RE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_DURATION_UNITS = (86400, 3600, 60, 1)
DURATION_HELP = "a duration like 30s, 5m, 1h30m, 2d or a whole number of seconds"


def parse_duration(text: str) -> int:
    """Parse ``30s``, ``5m``, ``1h30m``, ``2d``, ``1d12h`` or ``"90"`` into whole seconds.

    Units (d, h, m, s) appear at most once each, largest first. Raises ``ValueError``.
    """
    s = text.strip()
    if s.isdigit():
        return int(s)
    m = _DURATION_RE.fullmatch(s)
    if not s or m is None or not any(m.groups()):
        raise ValueError(f'must be {DURATION_HELP} (got "{text}")')
    return sum(int(g) * unit for g, unit in zip(m.groups(), _DURATION_UNITS, strict=True) if g)


def format_duration(seconds: int) -> str:
    """The canonical text of a duration: ``5400`` → ``"1h30m"``, ``0`` → ``"0s"``."""
    if seconds == 0:
        return "0s"
    out = []
    rest = seconds
    for unit, name in zip(_DURATION_UNITS, "dhms", strict=True):
        n, rest = divmod(rest, unit)
        if n:
            out.append(f"{n}{name}")
    return "".join(out)


# --------------------------------------------------------------------------- zones


@lru_cache(maxsize=256)
def load_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; raises ``ValueError`` naming the zone (with a suggestion)."""
    if not name or name != name.strip() or name.startswith("/") or ".." in name:
        raise ValueError(f'unknown time zone "{name}"')
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        hint = _zone_suggestion(name)
        raise ValueError(f'unknown time zone "{name}"{hint}') from exc


def _zone_suggestion(name: str) -> str:
    zones = sorted(zoneinfo.available_timezones())
    lowered = {z.lower(): z for z in zones}
    if name.lower() in lowered:
        return f' (did you mean "{lowered[name.lower()]}"?)'
    close = difflib.get_close_matches(name, zones, n=1, cutoff=0.75)
    return f' (did you mean "{close[0]}"?)' if close else " (use an IANA name like Europe/Berlin)"


# --------------------------------------------------------------------------- schedules

_FIELD_NAMES = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
_FIELD_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    start=1)}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FORMS_HELP = ("5 fields (minute hour day-of-month month day-of-week), 6 fields with seconds "
               "first, @hourly, @daily, @weekly, @monthly, @yearly, @annually, @midnight or "
               "@every <duration>")


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron line. Value sets are sorted tuples; ``fixed_time`` selects the DST rule."""

    expr: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 = Sunday … 6 = Saturday
    day_star: bool
    weekday_star: bool
    fixed_time: bool

    def day_matches(self, d: datetime) -> bool:
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        if not self.day_star and not self.weekday_star:
            return dom or dow
        return dom and dow

    def next_wall(self, w: datetime) -> datetime | None:
        """The first naive wall time ``>= w`` (whole seconds) matching every field, or None
        if there is none within nine years (only schedules like ``0 0 30 2 *``)."""
        w = w.replace(microsecond=0)
        limit = w.year + 9
        while w.year <= limit:
            if w.month not in self.months:
                i = bisect.bisect_right(self.months, w.month)
                w = (datetime(w.year, self.months[i], 1) if i < len(self.months)
                     else datetime(w.year + 1, self.months[0], 1))
                continue
            if not self.day_matches(w):
                w = datetime(w.year, w.month, w.day) + timedelta(days=1)
                continue
            if w.hour not in self.hours:
                i = bisect.bisect_right(self.hours, w.hour)
                w = (w.replace(hour=self.hours[i], minute=0, second=0) if i < len(self.hours)
                     else datetime(w.year, w.month, w.day) + timedelta(days=1))
                continue
            if w.minute not in self.minutes:
                i = bisect.bisect_right(self.minutes, w.minute)
                w = (w.replace(minute=self.minutes[i], second=0) if i < len(self.minutes)
                     else w.replace(minute=0, second=0) + timedelta(hours=1))
                continue
            if w.second not in self.seconds:
                i = bisect.bisect_right(self.seconds, w.second)
                w = (w.replace(second=self.seconds[i]) if i < len(self.seconds)
                     else w.replace(second=0) + timedelta(minutes=1))
                continue
            return w
        return None


@dataclass(frozen=True)
class EverySchedule:
    """``@every <interval>``: the instants ``phase_ms + k * interval`` since the epoch
    (``interval`` in seconds, ``phase_ms`` in milliseconds, ``0 <= phase_ms < interval * 1000``).

    ``phase_ms`` is 0 for a bare schedule; a job's timetable gets a phase derived from the
    job's name (:func:`spread`), the same on every worker."""

    expr: str
    interval: int
    phase_ms: int = 0


Schedule = CronSchedule | EverySchedule


def spread(schedule: Schedule, key: str) -> Schedule:
    """Give an ``@every`` schedule a stable phase within its interval, to the millisecond,
    derived from ``key`` (the job name), so that many jobs with the same interval fire spread
    evenly over it rather than together. Every worker computes the same phase; cron
    schedules are returned unchanged."""
    if not isinstance(schedule, EverySchedule):
        return schedule
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return replace(schedule, phase_ms=int.from_bytes(digest, "big") % (schedule.interval * 1000))


def parse_schedule(expr: str) -> Schedule:
    """Parse a schedule expression; raises :class:`ScheduleError` saying what is wrong."""
    if not isinstance(expr, str):
        raise ScheduleError(f"must be a string: {_FORMS_HELP}")
    text = " ".join(expr.split())
    if not text:
        raise ScheduleError(f"is empty; expected {_FORMS_HELP}")
    if text.startswith("@"):
        head, _, rest = text.partition(" ")
        head = head.lower()
        if head == "@every":
            if not rest:
                raise ScheduleError(f'"@every" needs a duration: {DURATION_HELP}')
            try:
                interval = parse_duration(rest)
            except ValueError as exc:
                raise ScheduleError(f'"@every": {exc}') from None
            if interval < 1:
                raise ScheduleError('"@every" needs an interval of at least 1s')
            return EverySchedule(text, interval)
        if head in _MACROS and not rest:
            return _parse_cron(text, _MACROS[head])
        if head == "@reboot":
            raise ScheduleError('"@reboot" is not supported (a cluster has no single boot)')
        raise ScheduleError(f'unknown macro "{head}"; expected {_FORMS_HELP}')
    return _parse_cron(text, text)


def _parse_cron(expr: str, body: str) -> CronSchedule:
    fields = body.split(" ")
    if len(fields) == 5:
        fields = ["0", *fields]
        has_seconds = False
    elif len(fields) == 6:
        has_seconds = True
    else:
        raise ScheduleError(f"expected {_FORMS_HELP} (got {len(fields)} fields)")
    values: list[tuple[int, ...]] = []
    for i, field in enumerate(fields):
        names = _MONTHS if i == 4 else _DAYS if i == 5 else None
        values.append(_parse_field(field, _FIELD_NAMES[i], *_FIELD_RANGES[i], names))
    weekdays = tuple(sorted({v % 7 for v in values[5]}))
    stars = [f.startswith(("*", "?")) for f in fields]
    sched = CronSchedule(
        expr=expr, seconds=values[0], minutes=values[1], hours=values[2], days=values[3],
        months=values[4], weekdays=weekdays, day_star=stars[3], weekday_star=stars[5],
        fixed_time=not ((has_seconds and stars[0]) or stars[1] or stars[2]),
    )
    # A schedule that can never fire (``0 0 30 2 *``) is an error, not a silent no-op.
    if sched.next_wall(datetime(2000, 1, 1)) is None:
        raise ScheduleError("never fires: no date matches its day-of-month and month fields")
    return sched


def _parse_field(text: str, name: str, lo: int, hi: int,
                 names: Mapping[str, int] | None) -> tuple[int, ...]:
    out: set[int] = set()

    def value(tok: str) -> int:
        if names is not None and tok.lower() in names:
            return names[tok.lower()]
        if not tok.isdigit():
            allowed = f"a number {lo}-{hi}"
            if names is not None:
                allowed += " or a name like " + ("jan" if name == "month" else "mon")
            raise ScheduleError(f'{name} field "{text}": "{tok}" is not {allowed}')
        v = int(tok)
        if not lo <= v <= hi:
            raise ScheduleError(f'{name} field "{text}": {v} is out of range {lo}-{hi}')
        return v

    for part in text.split(","):
        if not part:
            raise ScheduleError(f'{name} field "{text}": empty list item')
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(
                    f'{name} field "{text}": step "{step_text}" must be a positive number')
            step = int(step_text)
        if base in ("*", "?"):
            start, end = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = value(a), value(b)
            if start > end:
                raise ScheduleError(f'{name} field "{text}": range {base} is backwards')
        else:
            start = value(base)
            end = hi if slash else start
        out.update(range(start, end + 1, step))
    return tuple(sorted(out))


# --------------------------------------------------------------------------- time helpers

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _to_ts(t: datetime) -> int:
    return _to_ms(t) // 1000


def _from_ts(ts: int) -> datetime:
    return EPOCH + timedelta(seconds=ts)


def _to_ms(t: datetime) -> int:
    if t.tzinfo is None:
        raise ValueError("instants must be timezone-aware datetimes")
    return int((t - EPOCH) // timedelta(milliseconds=1))


def _from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


_OCC_RE = re.compile(r"(\d{8}T\d{6})(?:\.(\d{3}))?Z")


def occurrence_id(instant: datetime) -> str:
    """The instant in UTC: ``20261122T013000Z`` when it is a whole second, else to the
    millisecond, ``20261122T013000.250Z`` (finer fractions floored)."""
    secs, ms = divmod(_to_ms(instant), 1000)
    text = _from_ts(secs).strftime("%Y%m%dT%H%M%S")
    return f"{text}.{ms:03d}Z" if ms else f"{text}Z"


def parse_occurrence_id(text: str) -> datetime:
    """The aware UTC instant of an occurrence id (either form); raises ``ValueError``."""
    m = _OCC_RE.fullmatch(text)
    if m is None:
        raise ValueError(f'not an occurrence id like 20261122T013000Z: "{text}"')
    whole = datetime.strptime(m.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    return whole + timedelta(milliseconds=int(m.group(2) or 0))


MANUAL_SUFFIX = "-manual"
"""A manual run's occurrence id is ``<id of the request instant>-manual-<4 hex>``."""


def occurrence_instant(occ: str) -> datetime | None:
    """The instant of an occurrence id — a manual run's: when it was requested — or None
    if ``occ`` is not an occurrence id."""
    try:
        return parse_occurrence_id(occ.partition(MANUAL_SUFFIX)[0])
    except ValueError:
        return None


def occurrence_sort_key(occ: str) -> tuple[datetime, str]:
    """Sort occurrence ids by time. Text order is time order for the ids of one kind, but a
    whole-second id (``…013004Z``, cron or manual) sorts after a fractional one of the same
    second (``…013004.250Z``); ids that do not parse sort first."""
    return occurrence_instant(occ) or EPOCH, occ


def normalize_occurrence(text: str) -> str:
    """The canonical spelling of an occurrence id a user typed (``…013004.000Z`` →
    ``…013004Z``); raises ``ValueError`` if it is not one."""
    base, sep, rest = text.partition(MANUAL_SUFFIX)
    return occurrence_id(parse_occurrence_id(base)) + sep + rest


def _offset(zone: ZoneInfo, ts: int) -> int:
    off = datetime.fromtimestamp(ts, tz=zone).utcoffset()
    assert off is not None
    return int(off.total_seconds())


_SAMPLE = 3 * 3600  # offsets are sampled this often to find transitions (none are closer)


@lru_cache(maxsize=1024)
def _transitions(zone: ZoneInfo, year: int) -> tuple[int, ...]:
    """Instants in ``[Jan 1 year, Jan 1 year+1)`` UTC at which ``zone``'s offset changes."""
    start = _to_ts(datetime(year, 1, 1, tzinfo=UTC))
    end = _to_ts(datetime(year + 1, 1, 1, tzinfo=UTC))
    out = []
    prev_t, prev_off = start - 1, _offset(zone, start - 1)
    t = start
    while t < end + _SAMPLE:
        off = _offset(zone, t)
        if off != prev_off:
            lo, hi = prev_t, t  # offset(lo) == prev_off != offset(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset(zone, mid) == prev_off:
                    lo = mid
                else:
                    hi = mid
            if start <= hi < end:
                out.append(hi)
            prev_off = off
        prev_t = t
        t += _SAMPLE
    return tuple(out)


def _first_transition(zone: ZoneInfo, after: int, upto: int) -> int | None:
    """The first instant ``x`` with ``after < x <= upto`` at which the offset changes."""
    year = _from_ts(after).year
    last = _from_ts(upto).year
    while year <= last:
        for x in _transitions(zone, year):
            if after < x <= upto:
                return x
            if x > upto:
                return None
        year += 1
    return None


def _naive_wall(ts: int, off: int) -> datetime:
    return datetime(1970, 1, 1) + timedelta(seconds=ts + off)


def _wall_ts(w: datetime, off: int) -> int:
    return int((w - datetime(1970, 1, 1)) // timedelta(seconds=1)) - off


# --------------------------------------------------------------------------- timetable


@dataclass(frozen=True)
class Timetable:
    """A schedule in a zone: the source of a job's fire instants."""

    schedule: Schedule
    zone: ZoneInfo

    @classmethod
    def parse(cls, expr: str, timezone: str = "UTC") -> Timetable:
        """Parse both; raises :class:`ScheduleError` / ``ValueError`` (bad zone)."""
        return cls(parse_schedule(expr), load_zone(timezone))

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire instant strictly after ``after`` (None only if it never fires)."""
        ms = self._next_ms(_to_ms(after) + 1)
        return None if ms is None else _from_ms(ms)

    def iter_after(self, after: datetime) -> Iterator[datetime]:
        """Fire instants strictly after ``after``, ascending, forever."""
        t = _to_ms(after) + 1
        while (ms := self._next_ms(t)) is not None:
            yield _from_ms(ms)
            t = ms + 1

    def between(self, start: datetime, end: datetime) -> list[datetime]:
        """Fire instants ``x`` with ``start < x <= end``."""
        out = []
        for x in self.iter_after(start):
            if x > end:
                break
            out.append(x)
        return out

    def _next_ms(self, t: int) -> int | None:
        """The first fire instant ``>= t`` (milliseconds since the epoch)."""
        sched = self.schedule
        if isinstance(sched, EverySchedule):
            step = sched.interval * 1000
            return -(-(t - sched.phase_ms) // step) * step + sched.phase_ms
        ts = self._next_ts(-(-t // 1000))
        return None if ts is None else ts * 1000

    def _next_ts(self, t: int) -> int | None:
        """The first cron fire instant ``>= t`` (whole seconds since the epoch)."""
        sched = self.schedule
        assert isinstance(sched, CronSchedule)
        zone = self.zone
        while True:
            off = _offset(zone, t)
            prev_off = _offset(zone, t - 1)
            if sched.fixed_time and prev_off < off:
                # t is the end of a gap: fixed-time walls inside the gap fire now.
                m = sched.next_wall(_naive_wall(t, prev_off))
                if m is not None and m < _naive_wall(t, off):
                    return t
            w = sched.next_wall(_naive_wall(t, off))
            if w is None:
                return None
            inst = _wall_ts(w, off)
            x = _first_transition(zone, t, inst)
            if x is not None:
                t = x  # the offset changes before that wall time: re-plan from there
                continue
            if sched.fixed_time and self._is_repeat(w, inst):
                t = inst + 1  # second pass of a fold: it already fired at the first
                continue
            return inst

    def _is_repeat(self, w: datetime, inst: int) -> bool:
        first = _to_ts(w.replace(tzinfo=self.zone, fold=0))
        return first < inst and _naive_wall(first, _offset(self.zone, first)) == w


# --------------------------------------------------------------------------- misfires


@dataclass(frozen=True)
class CatchUp:
    """What to do about occurrences that fell due while no worker ran them.

    ``run`` is the one occurrence to start now (the latest due one, if within the starting
    deadline). ``missed`` are the occurrences to record as missed, oldest first: at most
    ``max_missed``, the latest ones; ``more_missed`` says older ones were left out.
    ``next_fire`` is the first occurrence after ``now``.
    """

    run: datetime | None
    missed: tuple[datetime, ...]
    more_missed: bool
    next_fire: datetime | None


def catch_up(timetable: Timetable, *, since: datetime, now: datetime,
             starting_deadline: float, edited_at: datetime | None = None,
             max_missed: int = 100) -> CatchUp:
    """Decide about the occurrences in ``(since, now]``.

    ``since`` is the last occurrence already handled (run, missed or claimed by anyone) or,
    for a job never run, when it was created. ``edited_at`` is when its schedule last
    changed: occurrences at or before it are never considered, so an edit never fires
    retroactively. The latest due occurrence runs if ``now - it <= starting_deadline``; every
    other due occurrence is missed.
    """
    lower = since if edited_at is None else max(since, edited_at)
    lower_ms, now_ms = _to_ms(lower), _to_ms(now)
    nxt = timetable.next_after(now)
    if lower_ms >= now_ms:
        return CatchUp(None, (), False, nxt)
    # Find the latest max_missed + 1 occurrences in (lower, now] without walking all of them:
    # look back through a window that grows until it holds enough or reaches ``lower``.
    window = 60_000
    while True:
        start_ms = max(lower_ms, now_ms - window)
        latest: deque[datetime] = deque(maxlen=max_missed + 1)
        count = 0
        for x in timetable.iter_after(_from_ms(start_ms)):
            if x > now:
                break
            latest.append(x)
            count += 1
        if count > max_missed or start_ms == lower_ms:
            break
        window *= 4
    items = list(latest)
    run: datetime | None = None
    if items and (now_ms - _to_ms(items[-1])) <= starting_deadline * 1000:
        run = items.pop()
    elif len(items) > max_missed:
        items.pop(0)
    more = count > len(items) + (run is not None)
    if not more and start_ms > lower_ms:
        first = timetable.next_after(_from_ms(lower_ms))
        more = first is not None and _to_ms(first) <= start_ms
    return CatchUp(run, tuple(items), more, nxt)


# --------------------------------------------------------------------------- workers


def rendezvous_score(job: str, occurrence: str, worker: str) -> int:
    """A stable 64-bit weight of ``worker`` for one occurrence (BLAKE2b, not ``hash()``)."""
    data = "\x1f".join((job, occurrence, worker)).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def rank_workers(job: str, occurrence: str, workers: Iterable[str]) -> list[str]:
    """The distinct ``workers`` ordered best-first for (job, occurrence).

    Deterministic (same inputs → same order on every machine), a permutation of the distinct
    inputs, and removing a worker leaves the relative order of the others unchanged, so only
    the occurrences it ranked first move.
    """
    return sorted(set(workers), key=lambda w: (-rendezvous_score(job, occurrence, w), w))


def tags_match(job_tags: Mapping[str, str], worker_tags: Mapping[str, str]) -> bool:
    """A worker may run a job iff it has every tag of the job with the same value.

    A job without tags runs on any worker; extra worker tags don't matter.
    """
    return all(worker_tags.get(k) == v for k, v in job_tags.items())


def eligible_workers(job_tags: Mapping[str, str],
                     workers: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Names of the workers (name → tags) whose tags satisfy ``job_tags``, sorted."""
    return sorted(name for name, tags in workers.items() if tags_match(job_tags, tags))
