"""Schedule expressions: cron lines, macros and ``@every``, durations and time zones.

Parsing only: what a schedule *is*. When it fires (DST rules, misfires) is
:mod:`scheduler.plan`'s part.

Forms
-----
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
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scheduler.errors import ScheduleError

__all__ = [
    "DURATION_HELP",
    "CronSchedule",
    "EverySchedule",
    "Schedule",
    "format_duration",
    "load_zone",
    "parse_duration",
    "parse_schedule",
    "spread",
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
