"""What the client commands do, as plain async functions (the CLI only renders them).

Everything here goes through :mod:`coord.client`, so it works on coord and on real etcd.
"""

from __future__ import annotations

import difflib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from coord.client import Client, Compare, delete, prefix_end, put, txn_op
from scheduler import keys, suspension
from scheduler.claim import ACTIVE, LockHolder, RunRecord
from scheduler.decode import BadValue, decode_spec, json_object
from scheduler.errors import SchedulerError
from scheduler.joblist import scan
from scheduler.limits import split_batches
from scheduler.plan import (
    normalize_occurrence,
    occurrence_id,
    occurrence_instant,
    occurrence_sort_key,
)
from scheduler.spec import JobSpec

MAX_TXN_JOBS = 100
"""Jobs changed per apply txn (etcd allows 128 ops per txn)."""
MAX_TXN_COMPARES = 128
"""etcd's limit on a txn's compares (counted apart from its operations)."""


class AdminError(SchedulerError):
    """A client command could not do what was asked; the message says why."""


class ApplyConflict(AdminError):
    """A compare-and-set of ``apply`` lost to a concurrent change: re-read and re-plan."""


@dataclass
class Change:
    kind: str  # "add" | "change" | "delete" | "same"
    name: str
    old: str | None = None
    """The stored JSON (a change), as read."""
    new: str | None = None
    """The file's JSON (an add or a change)."""

    @property
    def diff(self) -> list[str]:
        """The change as diff lines; built on demand, as a summary prints only a few of
        them and pretty-printing every spec of a large file is slow."""
        if self.new is None:
            return []
        if self.old is None:
            return [f"+ {line}" for line in _pretty(self.new)]
        old = _pretty(self.old) if self.old.startswith("{") else [self.old]
        return [line for line in difflib.unified_diff(old, _pretty(self.new), lineterm="", n=1)
                if not line.startswith(("---", "+++"))]


@dataclass
class ApplyPlan:
    changes: list[Change]
    applied: bool = False
    transactions: int = 0
    """How many txns the apply was split into (etcd's request size and op count limits)."""

    @property
    def effective(self) -> list[Change]:
        return [c for c in self.changes if c.kind != "same"]


def _pretty(spec_json: str) -> list[str]:
    return json.dumps(json.loads(spec_json), indent=2, sort_keys=True).splitlines()


async def apply_jobs(client: Client, specs: list[JobSpec], *, prune: bool,
                     dry_run: bool) -> ApplyPlan:
    """Make the stored jobs match ``specs`` with compare-and-set txns.

    Each txn compares the mod revision of every job it changes with what was read (or
    ``create_revision == 0`` for a new one), so a concurrent edit makes the apply fail
    instead of being overwritten; the first also compares that no other job was added,
    edited or deleted since the read (:func:`_unchanged_since`). Re-applying the same file
    changes nothing.
    """
    # Raw JSON and revision only: apply compares text, and parsing every stored spec would
    # be most of its cost.
    current, read_rev = await _read_jobs(client)
    changes: list[Change] = []
    compares = []
    ops = []
    sizes: list[int] = []
    wanted = {s.name for s in specs}
    for spec in sorted(specs, key=lambda s: s.name):
        new = spec.to_json()
        key = keys.job_key(spec.name)
        if spec.name not in current:
            changes.append(Change("add", spec.name, new=new))
            compares.append(Compare.create(key) == 0)
            ops.append(put(key, new))
            sizes.append(len(new))
            continue
        _, raw, rev = current[spec.name]
        if raw == new:
            changes.append(Change("same", spec.name))
            continue
        changes.append(Change("change", spec.name, old=raw, new=new))
        compares.append(Compare.mod(key) == rev)
        ops.append(put(key, new))
        sizes.append(len(new))
    if prune:
        for name, (_, _, rev) in sorted(current.items()):
            if name not in wanted:
                changes.append(Change("delete", name))
                compares.append(Compare.mod(keys.job_key(name)) == rev)
                # One op (a nested txn) so that ops and compares stay one per job.
                ops.append(txn_op([], [delete(keys.job_key(name)),
                                       delete(keys.deadman_key(name))], []))
                sizes.append(len(name))
    plan = ApplyPlan(changes)
    if dry_run or not ops:
        return plan
    batches = split_batches(sizes, max_ops=MAX_TXN_JOBS)
    untouched = [(c.name, current[c.name][2]) for c in changes if c.kind == "same"]
    for done, batch in enumerate(batches):
        guard = compares[batch.start:batch.stop]
        if done == 0:
            guard += _unchanged_since(read_rev, untouched, MAX_TXN_COMPARES - len(guard))
        res = await client.txn(guard, ops[batch.start:batch.stop], [])
        if not res.succeeded:
            raise ApplyConflict(
                "the stored jobs changed while applying (someone else applied at the same "
                f"time); {done} of {len(batches)} transaction(s) were written, nothing more — "
                "run apply again")
    plan.applied = True
    plan.transactions = len(batches)
    return plan


async def _read_jobs(client: Client) -> tuple[dict[str, tuple[None, str, int]], int]:
    """Every stored job as (None, raw JSON, mod revision) by name, and the revision they
    were read at (0 if there were none)."""
    current: dict[str, tuple[None, str, int]] = {}
    read_rev = 0
    async for rev, kv in scan(client, keys.JOBS.encode()):
        read_rev = rev
        current[keys.name_from(kv.key, keys.JOBS)] = (
            None, kv.value.decode(errors="replace"), kv.mod_revision)
    return current, read_rev


def _unchanged_since(read_rev: int, untouched: list[tuple[str, int]],
                     room: int) -> list[Any]:
    """The first apply txn's compares that ``/cron/jobs/`` is still what was read, so a
    concurrent apply's add or change of a job this one left alone (or, with ``--prune``,
    never saw) makes it an :class:`ApplyConflict` instead of a store matching no file:
    one range compare — every job's mod revision at most the read revision (an add or an
    edit since fails it; with nothing read, no job may exist) — and the mod revision of
    each job found the same (its deletion fails it: a range compare sees only the keys
    that exist), as many as etcd's compare limit leaves ``room`` for."""
    prefix = keys.JOBS.encode()
    whole = (Compare.mod(prefix) < read_rev + 1) if read_rev else (Compare.version(prefix) == 0)
    whole.range_end = prefix_end(prefix)
    return [whole, *[Compare.mod(keys.job_key(name)) == rev
                     for name, rev in untouched[:max(0, room - 1)]]]


async def get_job(client: Client, name: str) -> tuple[JobSpec, int]:
    kv = await client.get_one(keys.job_key(name))
    if kv is None:
        raise AdminError(f"no job named {name!r} (see `raftcron jobs list`)")
    try:
        return decode_spec(kv.key, kv.value), kv.mod_revision
    except BadValue as err:
        raise AdminError(f"the stored job {name!r} is invalid: {err}") from None


async def set_suspended(client: Client, name: str, suspended: bool, reason: str = "") -> bool:
    """Suspend (recording who, when and ``reason``) or resume; False if it already was.

    This is runtime state in ``/cron/suspend/<job>``, never the spec: applying a job file
    leaves it as it is. A job whose spec says ``suspend: true`` can only be resumed by
    applying a file that says otherwise; resuming it here is refused with that advice.
    """
    spec, _ = await get_job(client, name)
    if suspended:
        return await suspension.suspend(client, name, reason)
    changed = await suspension.resume(client, name)
    if spec.suspend:
        raise AdminError(
            f"job {name!r} stays suspended: its spec says `suspend: true` (set by the job "
            "file); change it there and run `raftcron apply`"
            + (" (its runtime suspension was removed)" if changed else ""))
    return changed


async def delete_job(client: Client, name: str) -> None:
    """Delete a stored job, a valid spec or not (an invalid one is exactly what an operator
    wants gone); compare-and-set on what was read."""
    kv = await client.get_one(keys.job_key(name))
    if kv is None:
        raise AdminError(f"no job named {name!r} (see `raftcron jobs list`)")
    rev = kv.mod_revision
    res = await client.txn([Compare.mod(keys.job_key(name)) == rev],
                           [delete(keys.job_key(name)), delete(keys.deadman_key(name))], [])
    if not res.succeeded:
        raise AdminError(f"job {name!r} changed meanwhile; try again")


async def job_exists(client: Client, name: str) -> bool:
    """A job is known by its name while its spec, a run record or its lock is stored (a
    deleted job keeps its history until pruned, and may still be running)."""
    for key in (keys.job_key(name), keys.lock_key(name)):
        if (await client.get(key, count_only=True)).count:
            return True
    return bool((await client.get(keys.runs_prefix(name), prefix=True, count_only=True)).count)


async def require_job(client: Client, name: str) -> None:
    if not await job_exists(client, name):
        raise AdminError(f"no job named {name!r} (see `raftcron jobs list`)")


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


async def running(client: Client, name: str) -> list[str]:
    """The occurrences of the job whose run is going (its record is active and its instant
    has come: a claim sent ahead that waits for its instant is not running yet)."""
    now = datetime.now(UTC)
    out = []
    for rec in await history(client, name, limit=1_000_000):
        instant = occurrence_instant(rec.occurrence)
        if rec.status in ACTIVE and (instant is None or instant <= now):
            out.append(rec.occurrence)
    return out


async def kill(client: Client, name: str, occurrence: str | None, reason: str) -> list[str]:
    """Ask the workers to kill the job's running run(s) — only ``occurrence``'s if given —
    and return the occurrences asked to die. Works for a job whose spec was deleted. Nothing
    running is an error (exit 1), so a script knows its kill did nothing."""
    if occurrence is not None:
        try:
            occurrence = normalize_occurrence(occurrence)
        except ValueError as err:
            raise AdminError(f"--occurrence: {err} (see `raftcron jobs history {name}`)") \
                from None
    await require_job(client, name)
    going = [o for o in await running(client, name) if occurrence in (None, o)]
    if not going:
        what = f"occurrence {occurrence} of job {name!r}" if occurrence else f"job {name!r}"
        raise AdminError(f"nothing to kill: {what} is not running "
                         f"(see `raftcron jobs history {name}`)")
    grant = await client.grant(10)
    await client.put(keys.killer_key(name),
                     json.dumps({"occurrence": occurrence, "reason": reason}), lease=grant.id)
    return going


async def run_record(client: Client, name: str, occurrence: str | None) -> RunRecord:
    """One run of the job: ``occurrence``'s, or the latest (for ``jobs logs``)."""
    if occurrence is None:
        latest = await history(client, name, limit=1)
        if not latest:
            await require_job(client, name)
            raise AdminError(f"job {name!r} has no runs yet")
        return latest[0]
    try:
        occurrence = normalize_occurrence(occurrence)
    except ValueError as err:
        raise AdminError(f"{err} (see `raftcron jobs history {name}`)") from None
    kv = await client.get_one(keys.run_key(name, occurrence))
    if kv is None:
        await require_job(client, name)
        raise AdminError(f"job {name!r} has no run {occurrence} "
                         f"(see `raftcron jobs history {name}`)")
    rec = RunRecord.decode(kv.value)
    rec.fencing_token = rec.fencing_token or kv.create_revision
    return rec


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
