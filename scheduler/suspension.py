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
from datetime import UTC, datetime
from typing import Any

from coord.client import Client, Compare, delete, put
from scheduler import keys


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
    """Delete the runtime suspension; False if there was none."""
    key = keys.suspend_key(name)
    res = await client.txn([Compare.create(key) != 0], [delete(key)], [])
    return res.succeeded


async def read_one(client: Client, name: str) -> Suspension | None:
    kv = await client.get_one(keys.suspend_key(name))
    return None if kv is None else Suspension.decode(kv.value)


async def read_all(client: Client) -> dict[str, Suspension]:
    r = await client.get(keys.SUSPENSIONS, prefix=True)
    return {keys.name_from(kv.key, keys.SUSPENSIONS): Suspension.decode(kv.value)
            for kv in r.kvs}
