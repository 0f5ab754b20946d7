"""The scheduler's key layout in the store (see docs: "The scheduler's keys").

Names read back from the store are untrusted: anyone with write access can put any bytes
under ``/cron/``. Every job name and occurrence id taken from a key or a value goes through
:func:`valid_job` / :func:`valid_occurrence` (the one validator), so a key like
``/cron/trigger/<job>/<occ>/../../x`` never names a file or another key.
"""

from __future__ import annotations

import re
from typing import Final

ROOT = "/cron/"
JOBS = "/cron/jobs/"
LOCKS = "/cron/lock/"
RUNS = "/cron/runs/"
WORKERS = "/cron/workers/"
KILLERS = "/cron/killer/"
TRIGGERS = "/cron/trigger/"
SUSPENSIONS = "/cron/suspend/"
DEADMAN = "/cron/deadman/"
"""A job's dead-man state (``scheduler.notify_deadman``); deleted with the job."""

JOB_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""A job name (the same rule as ``scheduler.spec.NAME_RE``): safe as a key and a file name."""
OCCURRENCE_RE: Final = re.compile(r"\d{8}T\d{6}(?:\.\d{3})?Z(?:-manual-[0-9a-f]{1,32})?")
"""An occurrence id: the UTC instant (``20261122T013000Z`` or ``…013000.250Z``), and for a
manual run ``-manual-<hex>``. No ``/``, no ``..``: safe as a key part and a file name."""
WORKER_NAME_MAX: Final = 253


def valid_job(name: object) -> bool:
    return isinstance(name, str) and JOB_NAME_RE.fullmatch(name) is not None


def valid_occurrence(occ: object) -> bool:
    return isinstance(occ, str) and OCCURRENCE_RE.fullmatch(occ) is not None


def job_key(job: str) -> str:
    return f"{JOBS}{job}"


def lock_key(job: str) -> str:
    return f"{LOCKS}{job}"


def runs_prefix(job: str) -> str:
    return f"{RUNS}{job}/"


def run_key(job: str, occurrence: str) -> str:
    return f"{RUNS}{job}/{occurrence}"


def worker_key(worker: str) -> str:
    return f"{WORKERS}{worker}"


def killer_key(job: str) -> str:
    return f"{KILLERS}{job}"


def trigger_key(job: str, occurrence: str) -> str:
    """A manual run request (``raftcron jobs trigger``), on a short lease."""
    return f"{TRIGGERS}{job}/{occurrence}"


def deadman_key(job: str) -> str:
    return DEADMAN + job


def suspend_key(job: str) -> str:
    """A job's runtime suspension (``raftcron jobs suspend``): who, when, why. Not spec:
    applying a job file never writes or deletes it."""
    return f"{SUSPENSIONS}{job}"


def name_from(key: bytes, prefix: str) -> str:
    """The rest of ``key`` after ``prefix``, for display (bytes that are not UTF-8 are
    replaced). Not validated: use :func:`job_from` where the name is acted on."""
    return key.decode(errors="replace")[len(prefix):]


def _rest(key: bytes, prefix: str) -> str | None:
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return None
    return text[len(prefix):] if text.startswith(prefix) else None


def job_from(key: bytes, prefix: str) -> str | None:
    """The job name of ``<prefix><job>`` (jobs, locks, killers), or None if it is not one."""
    rest = _rest(key, prefix)
    return rest if valid_job(rest) else None


def worker_from(key: bytes) -> str | None:
    """The worker name of ``/cron/workers/<name>``, or None (not UTF-8, empty, too long or
    with control characters)."""
    rest = _rest(key, WORKERS)
    if not rest or len(rest) > WORKER_NAME_MAX or not rest.isprintable():
        return None
    return rest


def job_occurrence_from(key: bytes, prefix: str) -> tuple[str, str] | None:
    """(job, occurrence) of ``<prefix><job>/<occurrence>`` (runs, triggers), or None."""
    rest = _rest(key, prefix)
    if rest is None:
        return None
    job, sep, occ = rest.partition("/")
    if not sep or not valid_job(job) or not valid_occurrence(occ):
        return None
    return job, occ
