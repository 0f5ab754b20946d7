"""What the client commands print, built from records (no I/O but :func:`refused`)."""

from __future__ import annotations

import socket
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from coord.netaddr import parse_hostport
from scheduler.attempts import attempt_count, attempts_of, duration
from scheduler.claim import RunRecord

PROBE_TIMEOUT = 1.0
"""Seconds a client command waits for a TCP connect before it leaves the verdict to the
store client (which retries for its whole timeout)."""


def ts(t: float | None) -> str | None:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds") if t else None


def seconds(d: float | None) -> str | None:
    return None if d is None else f"{d:.1f}s"


def refused(endpoints: str) -> str | None:
    """Why no endpoint can be reached, if every one of them refuses a TCP connection at
    once (nothing listens there): then waiting out the client's retries (~5 s) tells the
    user nothing more. None if any endpoint accepts, or answers otherwise (slow, filtered:
    the client decides, with its timeout)."""
    errors = []
    for ep in filter(None, (e.strip() for e in endpoints.split(","))):
        hostport = ep.split("://", 1)[-1]
        try:
            host, port = parse_hostport(hostport)
        except ValueError:
            return None
        try:
            with socket.create_connection((host or "127.0.0.1", port),
                                          timeout=PROBE_TIMEOUT):
                return None
        except ConnectionRefusedError:
            errors.append(f"{hostport}: connection refused")
        except OSError:
            return None
    return "; ".join(errors) if errors else None


def tags_text(tags: Any) -> str:
    if isinstance(tags, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(tags.items()))
    return str(tags)


def attempt_json(a: dict[str, Any]) -> dict[str, Any]:
    started, finished = a.get("started_at"), a.get("finished_at")
    out = dict(a)
    out["started_at"], out["finished_at"] = ts(started), ts(finished)
    out["duration"] = (round(float(finished) - float(started), 3)
                       if started and finished else None)
    return out


def run_json(rec: RunRecord) -> dict[str, Any]:
    """A run record for ``-o json``: times as ISO 8601, every attempt, the duration."""
    row = asdict(rec)
    for f in ("started_at", "finished_at", "claimed_at"):
        row[f] = ts(row[f])
    row["attempts"] = [attempt_json(a) for a in attempts_of(rec)]
    row["attempt"] = attempt_count(rec)
    d = duration(rec)
    row["duration"] = None if d is None else round(d, 3)
    return row


def history_row(rec: RunRecord) -> dict[str, Any]:
    """One line of ``jobs history``: the run, and how each attempt ended (``1:failed(1)
    2:failed(1) 3:succeeded(0)``)."""
    row = run_json(rec)
    row["attempts_text"] = " ".join(
        f"{a['attempt']}:{a['status']}"
        + (f"({a['exit_code']})" if a.get("exit_code") is not None else "")
        for a in row["attempts"]) or None
    first = row["attempts"][0]["started_at"] if row["attempts"] else row["started_at"]
    row["first_started_at"] = first
    row["duration_text"] = seconds(row["duration"])
    row["notified_text"] = notified_text(rec) or None
    return row


def notified_text(rec: RunRecord) -> str:
    """How the run's notifications went: ``failure:delivered overdue:failed(5)``."""
    return " ".join(
        f"{n.get('event')}:{n.get('result')}"
        + (f"({n.get('tries')})" if n.get("result") != "delivered" else "")
        for n in rec.notifications)


def logs_text(rec: RunRecord) -> list[str]:
    """``jobs logs``: the run, where each attempt's full log is, then the stored tail."""
    lines = [f"job {rec.job} occurrence {rec.occurrence}: {rec.status}"
             + (f" ({rec.note})" if rec.note else "")]
    attempts = attempts_of(rec)
    for a in attempts:
        where = (f"{rec.host}:{a['log']}" if a.get("log") else
                 f"{rec.host or '?'}: <--log-dir of worker {rec.worker}>/{rec.job}/"
                 f"{rec.occurrence}.{a['attempt']}.log")
        code = "" if a.get("exit_code") is None else f", exit {a['exit_code']}"
        lines.append(f"attempt {a['attempt']}: {a['status']}{code}, "
                     f"started {ts(a.get('started_at'))}, full log {where}")
    if not attempts:
        lines.append("no attempt has started")
    last = attempts[-1]["attempt"] if attempts else rec.attempt
    lines.append(f"--- output of attempt {last} (the last 4 KiB) ---")
    lines.append(rec.output_tail.rstrip("\n") if rec.output_tail else "(no output)")
    return lines


def suspension_json(by_spec: bool, runtime: Any) -> dict[str, Any] | None:
    """Why a job is suspended: ``jobs suspend`` (who, when, why) and/or its spec."""
    if runtime is None and not by_spec:
        return None
    out: dict[str, Any] = runtime.to_json() if runtime is not None else {}
    out["by_spec"] = by_spec
    return out


def suspension_text(info: dict[str, Any] | None) -> str:
    if not info:
        return ""
    parts = []
    if "by" in info:
        parts.append(f"by {info['by']} at {info['at']}"
                     + (f": {info['reason']}" if info.get("reason") else ""))
    if info.get("by_spec"):
        parts.append("by its spec (suspend: true)")
    return "yes, " + "; ".join(parts)
