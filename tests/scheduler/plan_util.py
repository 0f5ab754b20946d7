"""Helpers shared by the plan tests (test_plan*.py): zones and readable fire lists."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from scheduler.plan import Timetable, occurrence_id, parse_occurrence_id

NY = "America/New_York"
BERLIN = "Europe/Berlin"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(expr: str, tz: str, start: str, end: str) -> list[str]:
    """Occurrence ids of ``expr`` in ``tz`` in (start, end], both UTC ISO strings."""
    return [occurrence_id(x) for x in Timetable.parse(expr, tz).between(utc(start), utc(end))]


def local(ids: list[str], tz: str) -> list[str]:
    """The same instants as local wall time with the zone abbreviation (for readable tests)."""
    z = ZoneInfo(tz)
    return [parse_occurrence_id(i).astimezone(z).strftime("%m-%d %H:%M:%S %Z") for i in ids]
