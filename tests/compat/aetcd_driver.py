"""Drive the independent client library ``aetcd`` against one endpoint; print JSON.

Run in a SUBPROCESS (aetcd's generated protos clash with coord's in one protobuf
descriptor pool):

    python -m tests.compat.aetcd_driver --endpoint 127.0.0.1:2379 --prefix P scen1 scen2 ...

Prints ``{"<scenario>": {"base": <revision before>, "steps": [[label, result], ...]}}``.
Results keep raw revisions and ids under field names the harness's normaliser knows
(``revision``, ``create_revision``, ``mod_revision``, ``compact_revision``, ``ID``,
``lease``, ``member_id``, ``cluster_id``, ``raft_term``, ``ttl`` next to
``granted-ttl``); the test normalises them exactly as it does etcdctl's ``-w json``.
Errors become ``{"error": <aetcd exception class>, "detail": <server message>}``.

The scenarios live in ``aetcd_kv.py`` and ``aetcd_watch.py``, their step records in
``aetcd_steps.py`` (run it as a module from the repository, so that it imports them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aetcd

from tests.compat.aetcd_kv import (
    s_concurrency,
    s_delete,
    s_errors,
    s_keepalive,
    s_lease,
    s_lease_grants,
    s_lock,
    s_maintenance,
    s_prefix_range,
    s_put_get,
    s_range_filters,
    s_raw_txn,
    s_read_your_writes,
    s_status_members,
    s_txn,
)
from tests.compat.aetcd_steps import (
    Run,
)
from tests.compat.aetcd_watch import (
    s_raw_watch,
    s_watch,
    s_watch_catchup_batches,
    s_watch_compacted,
    s_watch_fragment,
    s_watch_future,
)

SCENARIOS: dict[str, Callable[[Run], Awaitable[None]]] = {
    "put_get": s_put_get,
    "read_your_writes": s_read_your_writes,
    "concurrency": s_concurrency,
    "prefix_range": s_prefix_range,
    "range_filters": s_range_filters,
    "delete": s_delete,
    "txn": s_txn,
    "raw_txn": s_raw_txn,
    "lease": s_lease,
    "keepalive": s_keepalive,
    "watch": s_watch,
    "watch_future": s_watch_future,
    "watch_compacted": s_watch_compacted,
    "raw_watch": s_raw_watch,
    "watch_catchup_batches": s_watch_catchup_batches,
    "watch_fragment": s_watch_fragment,
    "lock": s_lock,
    "status_members": s_status_members,
    "maintenance": s_maintenance,
    "lease_grants": s_lease_grants,
    "errors": s_errors,
}


async def main_async(endpoint: str, prefix: str, names: list[str]) -> dict[str, Any]:
    host, port = endpoint.rsplit(":", 1)
    out: dict[str, Any] = {}
    async with aetcd.Client(host=host, port=int(port), timeout=10) as client:
        for name in names:
            run = Run(client, f"{prefix}/{name}/")
            base = await run.base()
            run.steps_base = base
            run.endpoint = endpoint
            try:
                await asyncio.wait_for(SCENARIOS[name](run), 40)
            except Exception as e:  # noqa: BLE001 - report, the test compares it
                run.note("scenario aborted", {"exception": type(e).__name__, "detail": str(e)})
            out[name] = {"base": base, "steps": run.steps}
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint")
    ap.add_argument("--prefix", default="aetcd")
    ap.add_argument("--list", action="store_true", help="print the scenario names")
    ap.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    a = ap.parse_args()
    if a.list:
        sys.stdout.write("\n".join(SCENARIOS) + "\n")
        return 0
    if not a.endpoint:
        ap.error("--endpoint is required")
    names = a.scenarios or list(SCENARIOS)
    result = asyncio.run(main_async(a.endpoint, a.prefix, names))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
