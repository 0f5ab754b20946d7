"""What the client commands do, as plain async functions (the CLI only renders them).

Everything here goes through :mod:`coord.client`, so it works on coord and on real etcd.
"""

from __future__ import annotations

import difflib
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from coord.client import Client, Compare, delete, put
from scheduler import keys
from scheduler.claim import LockHolder, RunRecord
from scheduler.decode import BadValue, decode_spec, json_object
from scheduler.errors import SchedulerError
from scheduler.plan import normalize_occurrence, occurrence_id, occurrence_sort_key
from scheduler.spec import JobSpec

MAX_TXN_JOBS = 100
"""Jobs changed per apply txn (etcd allows 128 ops per txn)."""


class AdminError(SchedulerError):
    """A client command could not do what was asked; the message says why."""


@dataclass
class Change:
    kind: str  # "add" | "change" | "delete" | "same"
    name: str
    diff: list[str] = field(default_factory=list)


@dataclass
class ApplyPlan:
    changes: list[Change]
    applied: bool = False

    @property
    def effective(self) -> list[Change]:
        return [c for c in self.changes if c.kind != "same"]


def _pretty(spec_json: str) -> list[str]:
    return json.dumps(json.loads(spec_json), indent=2, sort_keys=True).splitlines()


async def stored_jobs(client: Client) -> dict[str, tuple[JobSpec | None, str, int]]:
    """name → (spec or None if unreadable, raw JSON, mod_revision)."""
    r = await client.get(keys.JOBS, prefix=True)
    out: dict[str, tuple[JobSpec | None, str, int]] = {}
    for kv in r.kvs:
        name = keys.name_from(kv.key, keys.JOBS)
        raw = kv.value.decode(errors="replace")
        try:  # total: any bad value (too deep, a name not its key's) is just unreadable
            spec: JobSpec | None = decode_spec(kv.key, kv.value)
        except BadValue:
            spec = None
        out[name] = (spec, raw, kv.mod_revision)
    return out


async def apply_jobs(client: Client, specs: list[JobSpec], *, prune: bool,
                     dry_run: bool) -> ApplyPlan:
    """Make the stored jobs match ``specs`` with compare-and-set txns.

    Each txn compares the mod revision of every job it changes with what was read (or
    ``create_revision == 0`` for a new one), so a concurrent edit makes the apply fail
    instead of being overwritten. Re-applying the same file changes nothing.
    """
    current = await stored_jobs(client)
    changes: list[Change] = []
    compares = []
    ops = []
    wanted = {s.name for s in specs}
    for spec in sorted(specs, key=lambda s: s.name):
        new = spec.to_json()
        key = keys.job_key(spec.name)
        if spec.name not in current:
            changes.append(Change("add", spec.name, [f"+ {line}" for line in _pretty(new)]))
            compares.append(Compare.create(key) == 0)
            ops.append(put(key, new))
            continue
        _, raw, rev = current[spec.name]
        if raw == new:
            changes.append(Change("same", spec.name))
            continue
        diff = [line for line in difflib.unified_diff(
            _pretty(raw) if raw.startswith("{") else [raw], _pretty(new), lineterm="", n=1)
            if not line.startswith(("---", "+++"))]
        changes.append(Change("change", spec.name, diff))
        compares.append(Compare.mod(key) == rev)
        ops.append(put(key, new))
    if prune:
        for name, (_, _, rev) in sorted(current.items()):
            if name not in wanted:
                changes.append(Change("delete", name))
                compares.append(Compare.mod(keys.job_key(name)) == rev)
                ops.append(delete(keys.job_key(name)))
    plan = ApplyPlan(changes)
    if dry_run or not ops:
        return plan
    for start in range(0, len(ops), MAX_TXN_JOBS):
        res = await client.txn(compares[start:start + MAX_TXN_JOBS],
                               ops[start:start + MAX_TXN_JOBS], [])
        if not res.succeeded:
            raise AdminError("the stored jobs changed while applying (someone else applied at "
                             "the same time); nothing more was written — run apply again")
    plan.applied = True
    return plan


async def get_job(client: Client, name: str) -> tuple[JobSpec, int]:
    kv = await client.get_one(keys.job_key(name))
    if kv is None:
        raise AdminError(f"no job named {name!r} (see `raftcron jobs list`)")
    try:
        return decode_spec(kv.key, kv.value), kv.mod_revision
    except BadValue as err:
        raise AdminError(f"the stored job {name!r} is invalid: {err}") from None


async def set_suspended(client: Client, name: str, suspended: bool) -> bool:
    """Suspend or resume; returns False if it already was. Compare-and-set."""
    spec, rev = await get_job(client, name)
    if spec.suspend == suspended:
        return False
    data = spec.to_dict()
    data["suspend"] = suspended
    new = JobSpec.from_json(json.dumps(data)).to_json()
    res = await client.txn([Compare.mod(keys.job_key(name)) == rev],
                           [put(keys.job_key(name), new)], [])
    if not res.succeeded:
        raise AdminError(f"job {name!r} changed meanwhile; try again")
    return True


async def delete_job(client: Client, name: str) -> None:
    _, rev = await get_job(client, name)
    res = await client.txn([Compare.mod(keys.job_key(name)) == rev],
                           [delete(keys.job_key(name))], [])
    if not res.succeeded:
        raise AdminError(f"job {name!r} changed meanwhile; try again")


async def history(client: Client, name: str, limit: int = 50) -> list[RunRecord]:
    r = await client.get(keys.runs_prefix(name), prefix=True)
    records = []
    for kv in r.kvs:
        try:
            rec = RunRecord.decode(kv.value)
        except (ValueError, TypeError):
            continue
        rec.fencing_token = rec.fencing_token or kv.create_revision
        records.append(rec)
    records.sort(key=lambda x: occurrence_sort_key(x.occurrence), reverse=True)
    return records[:limit]


async def trigger(client: Client, name: str) -> str:
    """Ask the workers to run the job now, once; returns the occurrence id. A ``forbid``
    job that is running is not asked (its workers would skip the request anyway)."""
    spec, _ = await get_job(client, name)
    if spec.concurrency == "forbid":
        lock = await client.get_one(keys.lock_key(name))
        if lock is not None:
            try:
                running = f" (occurrence {LockHolder.decode(lock.value).occurrence})"
            except ValueError:
                running = ""
            raise AdminError(f"job {name!r} is running{running} and its concurrency is "
                             "forbid: nothing started")
    occ = f"{occurrence_id(datetime.now(UTC))}-manual-{secrets.token_hex(2)}"
    grant = await client.grant(60)
    await client.put(keys.trigger_key(name, occ), json.dumps({"at": time.time()}),
                     lease=grant.id)
    return occ


async def kill(client: Client, name: str, occurrence: str | None, reason: str) -> None:
    """Ask the workers to kill the job's running run(s) — only ``occurrence``'s if given."""
    if occurrence is not None:
        try:
            occurrence = normalize_occurrence(occurrence)
        except ValueError as err:
            raise AdminError(f"--occurrence: {err} (see `raftcron jobs history {name}`)") \
                from None
    await get_job(client, name)
    grant = await client.grant(10)
    await client.put(keys.killer_key(name),
                     json.dumps({"occurrence": occurrence, "reason": reason}), lease=grant.id)


async def locks(client: Client) -> list[dict[str, Any]]:
    """Every held job lock with its holder, fencing token and lease TTL left."""
    r = await client.get(keys.LOCKS, prefix=True)
    out: list[dict[str, Any]] = []
    for kv in r.kvs:
        job = keys.name_from(kv.key, keys.LOCKS)
        try:
            holder = LockHolder.decode(kv.value)
        except (ValueError, TypeError):
            out.append({"job": job, "raw": kv.value.decode(errors="replace"),
                        "fencing_token": kv.create_revision})
            continue
        ttl = -1
        if kv.lease:
            ttl = (await client.time_to_live(kv.lease)).ttl
        out.append({
            "job": job, "worker": holder.worker, "host": holder.host, "pid": holder.pid,
            "occurrence": holder.occurrence, "run_id": holder.run_id,
            "since": datetime.fromtimestamp(holder.started_at, UTC).isoformat(
                timespec="seconds"),
            "lease": f"{kv.lease:x}", "ttl": ttl, "fencing_token": kv.create_revision,
        })
    return out


async def workers(client: Client) -> list[dict[str, Any]]:
    r = await client.get(keys.WORKERS, prefix=True)
    out = []
    for kv in r.kvs:
        try:
            info = json_object(kv.value)
        except BadValue:
            info = {}
        ttl = (await client.time_to_live(kv.lease)).ttl if kv.lease else -1
        out.append({
            "worker": keys.name_from(kv.key, keys.WORKERS), "host": info.get("host", ""),
            "pid": info.get("pid", 0), "tags": info.get("tags", {}),
            "version": info.get("version", ""),
            "started_at": datetime.fromtimestamp(_timestamp(info.get("started_at")),
                                                 UTC).isoformat(timespec="seconds"),
            "lease_ttl": ttl,
        })
    return out


def _timestamp(value: object) -> float:
    """A stored Unix time, or 0 for anything else (any client can write these keys)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e11
    return float(value) if ok else 0.0  # type: ignore[arg-type]
