"""The data behind `raftcron jobs list`, read in one pass however many jobs there are.

One paged range read of ``/cron/jobs/`` (the specs), one paged keys-only range read of
``/cron/runs/`` (which occurrences each job has), then the latest run record of each listed
job fetched many per txn. The range pages are all read at the revision of the first page.
The cost is O(pages), not one read per job. Rendering is the CLI's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from coord.client import Client, KeyValue, get
from coord.client.txn import prefix_end, range_request
from scheduler import keys
from scheduler.claim import RunRecord
from scheduler.decode import BadValue, decode_spec
from scheduler.plan import occurrence_sort_key
from scheduler.spec import JobSpec

PAGE = 1000
"""Keys per range request (etcd's responses stay well under its 2 MiB send default)."""

GETS_PER_TXN = 100
"""Run records fetched per txn (etcd's --max-txn-ops default is 128)."""


@dataclass
class JobEntry:
    name: str
    spec: JobSpec | None  # None when the stored JSON is unreadable
    raw: str
    revision: int
    last: RunRecord | None = None


async def scan(client: Client, prefix: bytes, *, keys_only: bool = False,
               revision: int = 0, page: int = 0) -> AsyncIterator[tuple[int, KeyValue]]:
    """Every key under ``prefix`` in key order, ``page`` keys per range request, all read
    at one revision (the first page's when ``revision`` is 0). Yields (revision, kv)."""
    page = page or PAGE
    key, end = prefix, prefix_end(prefix)
    while True:
        r = await client.range(range_request(key, range_end=end, revision=revision,
                                             limit=page, keys_only=keys_only))
        if revision == 0:
            revision = r.header.revision
        for kv in r.kvs:
            yield revision, kv
        if not r.more or not r.kvs:
            return
        key = r.kvs[-1].key + b"\0"


async def stored_raw(client: Client) -> list[JobEntry]:
    """Every stored job as raw JSON and mod revision (``spec`` left None), paged."""
    return [JobEntry(keys.name_from(kv.key, keys.JOBS), None,
                     kv.value.decode(errors="replace"), kv.mod_revision)
            async for _, kv in scan(client, keys.JOBS.encode())]


def _matches(spec: JobSpec | None, tags: dict[str, str]) -> bool:
    if not tags:
        return True
    if spec is None:
        return False
    return all(spec.tags.get(k) == v for k, v in tags.items())


def _may_match(raw: bytes, tags: dict[str, str]) -> bool:
    """False when the stored JSON's tags cannot match ``tags`` (then the value need not be
    decoded in full: a valid spec's tags are the JSON's, and an invalid one matches no
    tag). A cheap filter before :func:`decode_spec`, which settles the rest."""
    if not tags:
        return True
    try:
        stored = json.loads(raw).get("tags")
    except (ValueError, RecursionError, TypeError, AttributeError):
        return False
    if not isinstance(stored, dict):
        return False
    # A non-string value (``5``) may still decode to the tag asked for ("5"): decode it.
    return all(k in stored and (stored[k] == v or not isinstance(stored[k], str))
               for k, v in tags.items())


def _latest(run_keys: list[bytes]) -> bytes:
    """The key of the latest occurrence among one job's run keys (parsing the occurrence
    ids only when there is a choice: most listed jobs have one run)."""
    if len(run_keys) == 1:
        return run_keys[0]

    def when(key: bytes) -> tuple[datetime, str]:
        job_occ = key[len(keys.RUNS.encode()):].decode(errors="replace")
        return occurrence_sort_key(job_occ.partition("/")[2])
    return max(run_keys, key=when)


async def list_jobs(client: Client, *, prefix: str = "", tags: dict[str, str] | None = None,
                    with_last: bool = True) -> list[JobEntry]:
    """Stored jobs whose name starts with ``prefix`` and whose tags include ``tags``, sorted
    by name, each with its latest run record when ``with_last``."""
    tags = tags or {}
    entries: list[JobEntry] = []
    revision = 0
    async for revision, kv in scan(client, keys.JOBS.encode() + prefix.encode()):  # noqa: B007
        name = keys.name_from(kv.key, keys.JOBS)
        if not _may_match(kv.value, tags):
            continue
        try:
            spec: JobSpec | None = decode_spec(kv.key, kv.value)
        except BadValue:  # listed as unreadable, as every view skips it
            spec = None
        if _matches(spec, tags):
            entries.append(JobEntry(name, spec, kv.value.decode(errors="replace"),
                                    kv.mod_revision))
    if not with_last or not entries:
        return entries
    wanted = {e.name for e in entries}
    run_keys_of: dict[str, list[bytes]] = {}
    runs = keys.RUNS.encode()
    async for _, kv in scan(client, runs + prefix.encode(), keys_only=True,
                            revision=revision):
        job = kv.key[len(runs):].decode(errors="replace").partition("/")[0]
        if job in wanted:
            run_keys_of.setdefault(job, []).append(kv.key)
    by_key = {_latest(job_keys): job for job, job_keys in run_keys_of.items()}
    run_keys = sorted(by_key)
    found: dict[str, RunRecord] = {}
    for start in range(0, len(run_keys), GETS_PER_TXN):
        ops = [get(k) for k in run_keys[start:start + GETS_PER_TXN]]  # latest, not `revision`
        res = await client.txn([], ops, [])
        for resp in res.responses:
            for kv in getattr(resp, "kvs", []):
                try:
                    rec = RunRecord.decode(kv.value)
                except (ValueError, TypeError):
                    continue
                rec.fencing_token = rec.fencing_token or kv.create_revision
                found[by_key[kv.key]] = rec
    for e in entries:
        e.last = found.get(e.name)
    return entries

