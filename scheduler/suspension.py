"""Runtime suspension: state an operator sets, kept apart from the job's spec.

``raftcron jobs suspend NAME --reason TEXT`` writes ``/cron/suspend/<job>`` (who, when,
why); ``jobs resume`` deletes it. The spec's own ``suspend: true`` (from the job file) is
the other way to suspend a job. A job is scheduled only when neither says it is suspended.
Because ``apply`` (and ``agent --jobs``) only ever writes ``/cron/jobs/``, applying a file
never resumes a job an operator suspended (docs/scheduling.md, "Suspending a job").
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from coord.client import Client, Compare, delete, put, txn_op
from scheduler import keys
from scheduler.claim import RunRecord
from scheduler.errors import SpecError
from scheduler.plan import Timetable, catch_up, occurrence_id
from scheduler.spec import spec_from_json


@dataclass
class Suspension:
    """The value of ``/cron/suspend/<job>`` (JSON)."""

    by: str
    """``user@host`` of whoever ran ``jobs suspend``."""
    at: float
    """When (Unix seconds)."""
    reason: str = ""

    def encode(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def decode(cls, raw: bytes) -> Suspension:
        """A value someone wrote by hand (not JSON) still suspends: its text is the reason."""
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return cls(by="?", at=0.0, reason=raw.decode(errors="replace"))
        return cls(by=str(data.get("by", "?")), at=float(data.get("at", 0.0) or 0.0),
                   reason=str(data.get("reason", "")))

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.at, UTC).isoformat(timespec="seconds")
        return f"by {self.by} at {when}" + (f": {self.reason}" if self.reason else "")

    def to_json(self) -> dict[str, Any]:
        return {"by": self.by, "at": datetime.fromtimestamp(self.at, UTC).isoformat(
            timespec="seconds"), "reason": self.reason}


def who() -> str:
    """``user@host`` of this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"


async def suspend(client: Client, name: str, reason: str) -> bool:
    """Record a runtime suspension; False if the job already had one (kept as it was)."""
    key = keys.suspend_key(name)
    rec = Suspension(by=who(), at=time.time(), reason=reason)
    res = await client.txn([Compare.create(key) == 0], [put(key, rec.encode())], [])
    return res.succeeded


async def resume(client: Client, name: str) -> bool:
    """Delete the runtime suspension; False if there was none.

    The same txn records the occurrences due while the job was suspended (after the
    suspension's ``at``, up to now by this client's clock, the clock that set ``at``)
    ``skipped``, create-only (:func:`due_while_suspended`): they are not replayed — not by
    a worker that starts later, even if no worker was up at the resume (it catches up from
    the last of them), nor by a claim that a worker cut off from the store kept retrying
    through the suspension. Nothing is recorded for a job without a valid spec or a
    suspension without a time (written by hand)."""
    key = keys.suspend_key(name)
    for _ in range(5):  # the suspension read is replaced meanwhile: read again
        kv = await client.get_one(key)
        if kv is None:
            return False
        skip = await _suspended_records(client, name, Suspension.decode(kv.value))
        res = await client.txn([Compare.mod(key) == kv.mod_revision],
                               [delete(key), *skip], [])
        if res.succeeded:
            return True
    res = await client.txn([Compare.create(key) != 0], [delete(key)], [])
    return res.succeeded


RECORD_MAX = 100
"""Most occurrences one resume records (the newest; one nested op each, under etcd's 128
ops per txn level)."""


def due_while_suspended(timetable: Timetable, suspended_at: datetime, resumed_at: datetime,
                        starting_deadline: float) -> list[datetime]:
    """The occurrences due while the job was suspended (in ``(suspended_at, resumed_at]``)
    that a claim could still start — those within ``starting_deadline`` (and a second) of
    the resume — and
    always the last one (the restart catch-up resumes the timeline from it); at most
    ``RECORD_MAX``, the newest."""
    last = last_due_while_suspended(timetable, suspended_at, resumed_at)
    if last is None:
        return []
    # A claim gives up once its occurrence is more than starting_deadline old by its
    # worker's clock; a second more covers clocks behind the resuming client's.
    lower = max(suspended_at, resumed_at - timedelta(seconds=starting_deadline + 1))
    plan = catch_up(timetable, since=lower, now=resumed_at, starting_deadline=float("inf"),
                    max_missed=RECORD_MAX - 1)
    return sorted({*plan.missed, last})


def last_due_while_suspended(timetable: Timetable, suspended_at: datetime,
                             resumed_at: datetime) -> datetime | None:
    """The latest occurrence due while the job was suspended (in ``(suspended_at,
    resumed_at]``), None if none was: recorded ``skipped`` by the resume, it is where a
    worker that starts later resumes the job's timeline from, so the restart catch-up
    (which starts after the latest record) does not replay it."""
    return catch_up(timetable, since=suspended_at, now=resumed_at,
                    starting_deadline=float("inf"), max_missed=0).run


async def _suspended_records(client: Client, name: str, ended: Suspension) -> list[Any]:
    """The create-only puts of the ``skipped`` records of the occurrences due while
    ``ended`` suspended the job (nested txn ops; :func:`due_while_suspended`)."""
    job = await client.get_one(keys.job_key(name))
    if job is None or ended.at <= 0:
        return []
    try:
        spec = spec_from_json(job.value, keys.job_key(name))
    except (SpecError, ValueError):
        return []
    now = time.time()
    ops = []
    for instant in due_while_suspended(spec.timetable(), datetime.fromtimestamp(ended.at, UTC),
                                       datetime.fromtimestamp(now, UTC),
                                       spec.starting_deadline):
        occ = occurrence_id(instant)
        rk = keys.run_key(name, occ)
        rec = RunRecord(job=name, occurrence=occ, status="skipped", worker=who(),
                        finished_at=now, note=f"job suspended {ended.describe()}",
                        spec_revision=job.mod_revision)
        ops.append(txn_op([Compare.create(rk) == 0], [put(rk, rec.encode())], []))
    return ops


async def read_one(client: Client, name: str) -> Suspension | None:
    kv = await client.get_one(keys.suspend_key(name))
    return None if kv is None else Suspension.decode(kv.value)


async def read_all(client: Client) -> dict[str, Suspension]:
    r = await client.get(keys.SUSPENSIONS, prefix=True)
    return {keys.name_from(kv.key, keys.SUSPENSIONS): Suspension.decode(kv.value)
            for kv in r.kvs}
