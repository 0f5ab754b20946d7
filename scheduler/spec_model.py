"""The job model: :class:`JobSpec` (immutable, validated), its fields, limits and defaults.

See :mod:`scheduler.spec` for the job file format and the invariants of a spec.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from types import MappingProxyType
from typing import Any, Final, Literal

from scheduler.notify_model import NotifyEntry
from scheduler.plan import Timetable, load_zone, parse_schedule, spread

Concurrency = Literal["forbid", "allow", "replace"]
OnLost = Literal["record", "rerun"]

CONCURRENCY_VALUES: Final = ("forbid", "allow", "replace")
ON_LOST_VALUES: Final = ("record", "rerun")
NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
NAME_HELP: Final = ("must be 1-128 characters of letters, digits, '_', '-' and '.', starting "
                    "with a letter or digit (it becomes part of a store key)")
ENV_KEY_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TAG_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
RESERVED_ENV_PREFIX: Final = "RAFTCRON_"
INHERIT_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?|\*")
USER_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?")
DEFAULT_INHERIT_ENV: Final[tuple[str, ...]] = ("PATH", "LANG", "LC_*", "TZ")
"""What a job inherits from its worker's environment unless it says otherwise: where to find
programs, the locale and the time zone, and nothing that could hold a secret."""
MAX_RETRIES: Final = 100
MAX_HISTORY: Final = 10_000
MAX_RETRY_DELAY: Final = 3600
MAX_DURATION: Final = 366 * 86400

FIELDS: Final = (
    "name", "schedule", "timezone", "command", "env", "inherit_env", "user", "workdir",
    "timeout", "retries", "retry_backoff", "concurrency", "starting_deadline", "on_lost",
    "tags", "history_limit", "suspend", "notify", "expect",
)
REQUIRED: Final = ("name", "schedule", "command")
DEFAULTS: Final[Mapping[str, object]] = MappingProxyType({
    "timezone": "UTC",
    "env": {},
    "inherit_env": DEFAULT_INHERIT_ENV,
    "user": None,
    "workdir": None,
    "timeout": None,
    "retries": 0,
    "retry_backoff": 10,
    "concurrency": "forbid",
    "starting_deadline": 60,
    "on_lost": "record",
    "tags": {},
    "history_limit": 20,
    "suspend": False,
    "notify": (),
    "expect": None,
})


schedule_of = lru_cache(maxsize=1024)(parse_schedule)
"""parse_schedule, remembered: many jobs share a schedule, and a large file (or a listing
of the stored jobs) would otherwise parse the same few cron expressions once per job. The
schedules are immutable values; an invalid expression raises every time (not cached)."""


@dataclass(frozen=True)
class JobSpec:
    """One validated job. Durations are whole seconds; ``timeout`` None means no limit.

    ``command`` is an argv tuple (run directly) or a string (run by ``/bin/sh -c``).
    """

    name: str
    schedule: str
    command: tuple[str, ...] | str
    timezone: str = "UTC"
    env: Mapping[str, str] = field(default_factory=dict)
    inherit_env: tuple[str, ...] = DEFAULT_INHERIT_ENV
    user: str | None = None
    workdir: str | None = None
    timeout: int | None = None
    retries: int = 0
    retry_backoff: int = 10
    concurrency: Concurrency = "forbid"
    starting_deadline: int = 60
    on_lost: OnLost = "record"
    tags: Mapping[str, str] = field(default_factory=dict)
    history_limit: int = 20
    suspend: bool = False
    notify: tuple[NotifyEntry, ...] = ()
    expect: int | None = None
    """``expect: {succeed_within: D}``: seconds without a success before ``overdue``."""

    def __post_init__(self) -> None:
        # Freeze the maps (sorted, read-only) so a spec can't change after validation.
        object.__setattr__(self, "env", MappingProxyType(dict(sorted(self.env.items()))))
        object.__setattr__(self, "tags", MappingProxyType(dict(sorted(self.tags.items()))))
        if isinstance(self.command, list):
            object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "inherit_env", tuple(self.inherit_env))
        object.__setattr__(self, "notify", tuple(self.notify))

    def __hash__(self) -> int:
        return hash(self.to_json())

    # ------------------------------------------------------------------ derived

    def timetable(self) -> Timetable:
        """The job's schedule in its zone (see :mod:`scheduler.plan`)."""
        return Timetable(spread(schedule_of(self.schedule), self.name),
                         load_zone(self.timezone))

    def retry_delay(self, attempt: int) -> int:
        """Seconds to wait before attempt ``attempt + 1`` after attempt ``attempt`` (1-based)
        failed: ``retry_backoff * 2**(attempt-1)``, capped at one hour."""
        if attempt < 1:
            raise ValueError("attempts are numbered from 1")
        delay: int = self.retry_backoff * 2 ** min(attempt - 1, 32)
        return min(delay, MAX_RETRY_DELAY)

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, every field present (``notify`` and ``expect`` only when
        set, so that the stored specs of jobs without them keep their bytes)."""
        out: dict[str, Any] = {
            "name": self.name,
            "schedule": self.schedule,
            "timezone": self.timezone,
            "command": self.command if isinstance(self.command, str) else list(self.command),
            "env": dict(self.env),
            "inherit_env": list(self.inherit_env),
            "user": self.user,
            "workdir": self.workdir,
            "timeout": self.timeout,
            "retries": self.retries,
            "retry_backoff": self.retry_backoff,
            "concurrency": self.concurrency,
            "starting_deadline": self.starting_deadline,
            "on_lost": self.on_lost,
            "tags": dict(self.tags),
            "history_limit": self.history_limit,
            "suspend": self.suspend,
        }
        if self.notify:
            out["notify"] = [n.to_dict() for n in self.notify]
        if self.expect is not None:
            out["expect"] = {"succeed_within": self.expect}
        return out

    def to_json(self) -> str:
        """Canonical JSON (the value of ``/cron/jobs/<name>``): sorted keys, no spaces."""
        return self._json

    @cached_property
    def _json(self) -> str:
        # Computed once: the limits check, apply and hashing each want it (the spec is
        # immutable, so the text cannot go stale).
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False)
