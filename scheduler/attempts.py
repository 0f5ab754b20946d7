"""The attempts of a run, as its run record keeps them (``RunRecord.attempts``).

Each attempt is a plain JSON object: ``attempt`` (1-based), ``started_at`` and
``finished_at`` (Unix seconds), ``exit_code``, ``signal``, ``status`` (how that attempt
ended: ``succeeded``, ``failed``, ``timeout``, ``killed``) and ``log`` (the absolute path of
its output file on the run record's ``host``). Records written by workers from before this
list existed have none: :func:`attempts_of` then describes their one known attempt from the
record's own fields, so old and new records read alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scheduler.claim import RunRecord


def attempt_entry(attempt: int, *, started_at: float, finished_at: float,
                  exit_code: int | None, signal: int | None, status: str,
                  log: Path | None, note: str = "") -> dict[str, Any]:
    entry: dict[str, Any] = {
        "attempt": attempt, "started_at": started_at, "finished_at": finished_at,
        "exit_code": exit_code, "signal": signal, "status": status,
        "log": str(log.absolute()) if log is not None else ""}
    if note:
        entry["note"] = note
    return entry


def attempts_of(rec: RunRecord) -> list[dict[str, Any]]:
    """Every attempt of the run that is known, oldest first."""
    if rec.attempts:
        return [dict(a) for a in rec.attempts]
    if not rec.started_at:
        return []
    return [{"attempt": rec.attempt or 1, "started_at": rec.started_at,
             "finished_at": rec.finished_at, "exit_code": rec.exit_code,
             "signal": rec.signal, "status": rec.status, "log": ""}]


def attempt_count(rec: RunRecord) -> int:
    return max(rec.attempt, len(rec.attempts))


def duration(rec: RunRecord) -> float | None:
    """Seconds from the first attempt's start to the run's end (None while unknown)."""
    attempts = attempts_of(rec)
    first = attempts[0]["started_at"] if attempts else rec.started_at
    if not first or not rec.finished_at:
        return None
    return max(0.0, rec.finished_at - float(first))
