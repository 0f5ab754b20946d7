"""Occurrence ids: a fire instant named by its UTC time, and the millisecond helpers.

``20261122T013000Z`` to the second, ``20261122T013000.250Z`` when the instant has a fraction
(``@every`` phases, manual runs); a manual run appends ``-manual-<4 hex>``. As text, a
whole-second id sorts after a fractional one of the same second: order and age ids by
:func:`occurrence_sort_key` / :func:`occurrence_instant`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = [
    "EPOCH",
    "MANUAL_SUFFIX",
    "from_ms",
    "from_ts",
    "normalize_occurrence",
    "occurrence_id",
    "occurrence_instant",
    "occurrence_sort_key",
    "parse_occurrence_id",
    "to_ms",
    "to_ts",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ts(t: datetime) -> int:
    return to_ms(t) // 1000


def from_ts(ts: int) -> datetime:
    return EPOCH + timedelta(seconds=ts)


def to_ms(t: datetime) -> int:
    if t.tzinfo is None:
        raise ValueError("instants must be timezone-aware datetimes")
    return int((t - EPOCH) // timedelta(milliseconds=1))


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


_OCC_RE = re.compile(r"(\d{8}T\d{6})(?:\.(\d{3}))?Z")


def occurrence_id(instant: datetime) -> str:
    """The instant in UTC: ``20261122T013000Z`` when it is a whole second, else to the
    millisecond, ``20261122T013000.250Z`` (finer fractions floored)."""
    secs, ms = divmod(to_ms(instant), 1000)
    text = from_ts(secs).strftime("%Y%m%dT%H%M%S")
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
