"""The stored records of a run: ``/cron/runs/<job>/<occurrence>`` (:class:`RunRecord`) and
``/cron/lock/<job>`` (:class:`LockHolder`), as canonical JSON, read back type-checked.

What writes them, and under which compares, is :mod:`scheduler.claim`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from scheduler.keys import valid_job, valid_occurrence

RunStatus = Literal["claimed", "running", "succeeded", "failed", "timeout", "killed", "lost",
                    "missed", "skipped", "retrying"]
ACTIVE: frozenset[str] = frozenset({"claimed", "running", "retrying"})


_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
"""Canonical JSON of the records (one encoder, built once)."""


@dataclass
class RunRecord:
    """The value of ``/cron/runs/<job>/<occurrence>`` (JSON)."""

    job: str
    occurrence: str
    status: str
    worker: str = ""
    host: str = ""
    pid: int = 0
    run_id: str = ""
    attempt: int = 0
    fencing_token: int = 0
    lease: int = 0
    """The claimant's session lease: once it has expired the run can no longer be alive."""
    spec_revision: int = 0
    """mod_revision of the job spec the run was planned from."""
    claimed_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int | None = None
    signal: int | None = None
    output_tail: str = ""
    """The output of the last attempt (its last 4 KiB)."""
    note: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    """Every finished attempt, oldest first (``scheduler.attempts``): start, end, exit code,
    status and log path of each. Absent from records of older workers (read as empty), and
    ignored by them (they decode known fields only)."""
    notifications: list[dict[str, Any]] = field(default_factory=list)
    """How each ``notify:`` delivery for this run ended (``scheduler.notify``: event, target,
    result, tries, error, worker, at), appended by the delivering worker; kept when the
    record is rewritten."""

    def encode(self) -> bytes:
        # Not dataclasses.asdict (a recursive deep copy): every field is a plain value.
        return _dumps({k: getattr(self, k) for k in self.__dataclass_fields__}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> RunRecord:
        """Raises ``ValueError`` unless ``raw`` is a record with fields of the right types
        and a valid job name and occurrence id (both name keys and files)."""
        rec = cls(**_fields(raw, _RUN_TYPES, ("job", "occurrence", "status")))
        if not valid_job(rec.job) or not valid_occurrence(rec.occurrence):
            raise ValueError("a run record with an invalid job name or occurrence id")
        rec.attempts = [a for a in rec.attempts if isinstance(a, dict)]  # skip what is not
        rec.notifications = [n for n in rec.notifications if isinstance(n, dict)]
        return rec


@dataclass
class LockHolder:
    """The value of ``/cron/lock/<job>``: who holds the job and for which run. The fencing
    token is the lock's create revision (the claim txn's revision)."""

    worker: str
    host: str
    pid: int
    occurrence: str
    run_id: str
    started_at: float
    lease: int = 0

    def encode(self) -> bytes:
        return _dumps({k: getattr(self, k) for k in self.__dataclass_fields__}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> LockHolder:
        """Raises ``ValueError`` unless ``raw`` is a holder with a valid occurrence id."""
        holder = cls(**_fields(raw, _HOLDER_TYPES, tuple(_HOLDER_TYPES)[:-1]))
        if not valid_occurrence(holder.occurrence):
            raise ValueError("a lock holder with an invalid occurrence id")
        return holder


_STR, _INT, _FLOAT, _OPT_INT = (str,), (int,), (int, float), (int, type(None))
_RUN_TYPES: dict[str, tuple[type, ...]] = {
    "job": _STR, "occurrence": _STR, "status": _STR, "worker": _STR, "host": _STR,
    "pid": _INT, "run_id": _STR, "attempt": _INT, "fencing_token": _INT, "lease": _INT,
    "spec_revision": _INT, "claimed_at": _FLOAT, "started_at": _FLOAT,
    "finished_at": _FLOAT, "exit_code": _OPT_INT, "signal": _OPT_INT, "output_tail": _STR,
    "note": _STR, "attempts": (list,), "notifications": (list,)}
_HOLDER_TYPES: dict[str, tuple[type, ...]] = {
    "worker": _STR, "host": _STR, "pid": _INT, "occurrence": _STR, "run_id": _STR,
    "started_at": _FLOAT, "lease": _INT}


def _fields(raw: bytes, types: dict[str, tuple[type, ...]],
            required: tuple[str, ...]) -> dict[str, Any]:
    """The known fields of a stored JSON object, type-checked; raises ``ValueError`` for
    anything else (bad JSON, nesting too deep for the parser, not an object, a field of
    the wrong type or missing) — never another exception."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError, TypeError) as err:
        raise ValueError(f"invalid JSON: {type(err).__name__}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    out = {k: v for k, v in data.items() if k in types}
    for k, v in out.items():
        if isinstance(v, bool) or not isinstance(v, types[k]):
            raise ValueError(f"field {k!r} has the wrong type")
    missing = [k for k in required if k not in out]
    if missing:
        raise ValueError(f"missing fields {missing}")
    return out
