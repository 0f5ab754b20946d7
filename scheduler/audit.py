"""The audit trail: who changed a job definition (apply, delete) or asked for a trigger,
kill, suspend or resume, what, when and from where, kept in the store under
``/cron/audit/`` (docs/security.md, "Audit trail").

A CLI command's client is wrapped in :class:`AuditedClient`: every write it sends to a key
that is one of those actions gets its audit record added to the same transaction, in the
branch that does the action, so the record exists exactly when the action happened. Old
records are pruned in that transaction too: one delete of the range of keys older than the
retention (the keys sort by time). A count bound is kept after the write.

The record names the user the command logged in as (``--user``), else the common name of
its client certificate, else ``anonymous``; never a password or a token.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coord.client import Client, delete, put
from coord.pb import rpc_pb2
from scheduler import keys

AUDIT = "/cron/audit/"
RETENTION_SECONDS = 90 * 86400.0
"""Records older than this are deleted by the next audited write."""
MAX_RECORDS = 10_000
"""At most this many records are kept (the oldest go first)."""

_ACTIONS = (
    (keys.JOBS, "apply", "delete"),
    (keys.TRIGGERS, "trigger", None),
    (keys.KILLERS, "kill", None),
    (keys.SUSPENSIONS, "suspend", "resume"),
)


def record_key(at_ns: int) -> str:
    """``/cron/audit/<nanoseconds, 20 digits>-<random>``: keys sort by time."""
    return f"{AUDIT}{at_ns:020d}-{secrets.token_hex(3)}"


def _cutoff_key(at_ns: int) -> str:
    return f"{AUDIT}{at_ns:020d}"


@dataclass(frozen=True)
class Identity:
    """Who acts (the store's user) and from where."""

    who: str
    host: str
    pid: int
    os_user: str

    @classmethod
    def of(cls, user: str | None) -> Identity:
        """``user``: the store user (or ``cn=<common name>`` of the client certificate)."""
        who = user or "anonymous"
        try:
            os_user = getpass.getuser()
        except (KeyError, OSError):
            os_user = "?"
        return cls(who, socket.gethostname(), os.getpid(), os_user)


def _action(op: rpc_pb2.RequestOp) -> tuple[str, str, str] | None:
    """(action, job, detail) of a write to an audited key, or None."""
    which = op.WhichOneof("request")
    if which == "request_put":
        key, is_put = op.request_put.key, True
    elif which == "request_delete_range":
        key, is_put = op.request_delete_range.key, False
    else:
        return None
    for prefix, on_put, on_delete in _ACTIONS:
        if which == "request_delete_range" and prefix == keys.JOBS \
                and op.request_delete_range.range_end:
            continue
        name = keys.name_from(key, prefix) if key.startswith(prefix.encode()) else None
        if not name:
            continue
        action = on_put if is_put else on_delete
        if action is None:
            return None
        job, _, occurrence = name.partition("/")
        detail = ""
        if prefix == keys.KILLERS and is_put:
            try:
                detail = json.loads(op.request_put.value).get("occurrence") or ""
            except (ValueError, AttributeError):
                detail = ""
        return action, job, occurrence or detail
    return None


def _actions(ops: Sequence[rpc_pb2.RequestOp]) -> list[tuple[str, str, str]]:
    found = []
    for op in ops:
        if op.WhichOneof("request") == "request_txn":
            found += _actions(op.request_txn.success)
        else:
            one = _action(op)
            if one is not None:
                found.append(one)
    return found


def audit_ops(identity: Identity, actions: list[tuple[str, str, str]],
              now: float | None = None) -> list[rpc_pb2.RequestOp]:
    """The record of ``actions`` (all in one transaction) and the prune of old records."""
    at = time.time() if now is None else now
    at_ns = int(at * 1e9)
    by_action: dict[str, list[str]] = {}
    for action, job, _ in actions:
        by_action.setdefault(action, []).append(job)
    record = {
        "at": at, "who": identity.who, "host": identity.host, "pid": identity.pid,
        "os_user": identity.os_user,
        "action": ",".join(sorted(by_action)),
        "jobs": sorted({job for _, job, _ in actions}),
        "changes": by_action,
        "detail": sorted({d for _, _, d in actions if d}),
    }
    cutoff = _cutoff_key(max(at_ns - int(RETENTION_SECONDS * 1e9), 0)).encode()
    prune = rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(
        key=AUDIT.encode(), range_end=cutoff))
    return [put(record_key(at_ns), json.dumps(record, sort_keys=True)), prune]


class AuditedClient:
    """A :class:`Client` whose writes of audited actions carry their audit record."""

    def __init__(self, client: Client, identity: Identity) -> None:
        self._client = client
        self.identity = identity
        self.wrote = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def txn(self, compare: Sequence[rpc_pb2.Compare],
                  success: Sequence[rpc_pb2.RequestOp] = (),
                  failure: Sequence[rpc_pb2.RequestOp] = ()) -> Any:
        actions = _actions(success)
        if actions:
            success = [*success, *audit_ops(self.identity, actions)]
        res = await self._client.txn(compare, success, failure)
        if actions and res.succeeded:
            self.wrote = True
        return res

    async def put(self, key: Any, value: Any, *, lease: int = 0, prev_kv: bool = False) -> Any:
        op = put(key, value, lease=lease, prev_kv=prev_kv)
        if _action(op) is None:
            return await self._client.put(key, value, lease=lease, prev_kv=prev_kv)
        res = await self.txn([], [op])
        return res.responses[0]

    async def delete(self, key: Any, **kw: Any) -> Any:
        op = delete(key, prefix=kw.get("prefix", False))
        if kw.get("range_end") or kw.get("prev_kv") or _action(op) is None:
            return await self._client.delete(key, **kw)
        res = await self.txn([], [op])
        return res.responses[0]

    async def bound(self) -> None:
        """Keep at most :data:`MAX_RECORDS` records: delete the oldest beyond it."""
        count = (await self._client.get(AUDIT, prefix=True, count_only=True)).count
        if count <= MAX_RECORDS:
            return
        oldest = await self._client.get(AUDIT, prefix=True, keys_only=True,
                                        limit=count - MAX_RECORDS)
        if oldest.kvs:
            await self._client.delete(AUDIT, range_end=oldest.kvs[-1].key + b"\0")


async def records(client: Client, job: str | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:
    """The audit records, newest first; only those naming ``job`` if given."""
    r = await client.get(AUDIT, prefix=True)
    out = []
    for kv in reversed(r.kvs):
        try:
            rec = json.loads(kv.value)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        if job is not None and job not in (rec.get("jobs") or []):
            continue
        out.append(rec)
        if len(out) >= limit:
            break
    return out
