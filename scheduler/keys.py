"""The scheduler's key layout in the store (see docs: "The scheduler's keys")."""

from __future__ import annotations

ROOT = "/cron/"
JOBS = "/cron/jobs/"
LOCKS = "/cron/lock/"
RUNS = "/cron/runs/"
WORKERS = "/cron/workers/"
KILLERS = "/cron/killer/"
TRIGGERS = "/cron/trigger/"
SUSPENSIONS = "/cron/suspend/"


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


def suspend_key(job: str) -> str:
    """A job's runtime suspension (``raftcron jobs suspend``): who, when, why. Not spec:
    applying a job file never writes or deletes it."""
    return f"{SUSPENSIONS}{job}"


def name_from(key: bytes, prefix: str) -> str:
    return key.decode()[len(prefix):]
