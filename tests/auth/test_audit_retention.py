"""The audit trail's bounded retention: an audited write deletes the records older than
the retention in its own transaction, and the count bound deletes the oldest beyond it."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from coord.client import Client
from scheduler import audit, keys
from scheduler.audit import AUDIT, AuditedClient, Identity, record_key
from tests.helpers.procs import ProcessGroup, start_coord

pytestmark = pytest.mark.timeout(60)


def test_old_records_pruned_in_the_action_txn_and_count_bounded(
        procs: ProcessGroup, monkeypatch: pytest.MonkeyPatch) -> None:
    ep = start_coord(procs).endpoint
    now = time.time()
    old_ns = int((now - audit.RETENTION_SECONDS - 60) * 1e9)
    recent_ns = int((now - 60) * 1e9)

    async def body() -> None:
        async with Client([ep]) as raw:
            await raw.put(record_key(old_ns), json.dumps({"who": "old", "jobs": ["a"]}))
            for i in range(5):
                await raw.put(record_key(recent_ns + i), json.dumps({"who": f"r{i}"}))
            client = AuditedClient(raw, Identity.of("alice"))
            # An unaudited write adds nothing and prunes nothing.
            await client.put(keys.worker_key("w"), "{}")
            assert (await raw.get(AUDIT, prefix=True, count_only=True)).count == 6
            # A trigger: its record, and the old one gone, in one revision.
            before = (await raw.get(AUDIT, prefix=True, count_only=True)).revision
            await client.put(keys.trigger_key("a", "20261206T000000Z-manual-1"), "{}")
            r = await raw.get(AUDIT, prefix=True)
            assert [json.loads(kv.value)["who"] for kv in r.kvs] == [
                "r0", "r1", "r2", "r3", "r4", "alice"]
            assert r.revision == before + 1
            newest = json.loads(r.kvs[-1].value)
            assert (newest["action"], newest["jobs"]) == ("trigger", ["a"])
            # The count bound keeps the newest MAX_RECORDS.
            monkeypatch.setattr(audit, "MAX_RECORDS", 3)
            await client.bound()
            r = await raw.get(AUDIT, prefix=True)
            assert [json.loads(kv.value)["who"] for kv in r.kvs] == ["r3", "r4", "alice"]
            assert [x["who"] for x in await audit.records(raw, job="a")] == ["alice"]
    asyncio.run(body())
