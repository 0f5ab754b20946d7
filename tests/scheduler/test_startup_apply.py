"""An agent's `--jobs FILE` at start (scheduler/startup.py), against a real coord process.

What a user depends on: several agents started at once with one file all get past the
apply — the one that loses the compare-and-set re-reads, finds nothing left to change and
goes on (it used to die with "the stored jobs changed while applying"); and an agent whose
store is not up yet keeps retrying, saying so, until the store takes the file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from coord.client import Client
from scheduler import keys, startup
from scheduler.admin import apply_jobs
from scheduler.spec import JobSpec, load_jobs
from tests.helpers.procs import ProcessGroup, free_port, start_coord
from tests.scheduler.test_cli import JOBS


def specs(tmp: Path) -> tuple[Path, list[JobSpec]]:
    path = tmp / "jobs.yaml"
    path.write_text(JOBS)
    return path, load_jobs(path)


async def stored(client: Client) -> dict[str, tuple[bytes, int]]:
    r = await client.get(keys.JOBS, prefix=True)
    return {keys.name_from(kv.key, keys.JOBS): (kv.value, kv.mod_revision) for kv in r.kvs}


def test_a_lost_compare_and_set_rereads_and_replans(procs: ProcessGroup) -> None:
    endpoint = start_coord(procs).endpoint
    path, jobs = specs(procs.workdir)

    async def body() -> dict[str, tuple[bytes, int]]:
        async with Client([endpoint]) as ours, Client([endpoint]) as other:
            real_txn = ours.txn
            raced: list[Any] = []

            async def txn(*args: Any, **kwargs: Any) -> Any:
                if not raced:  # another agent, same file, gets there first
                    raced.append(await apply_jobs(other, jobs, prune=False, dry_run=False))
                return await real_txn(*args, **kwargs)

            ours.txn = txn  # type: ignore[method-assign]
            await asyncio.wait_for(startup.apply_at_start(ours, jobs, path), 30)
            return await stored(other)

    with capture_logs() as logs:
        final = asyncio.run(body())
    events = [e["event"] for e in logs]
    assert "agent.jobs_apply_conflict" in events, events
    applied = [e for e in logs if e["event"] == "agent.jobs_applied"]
    assert len(applied) == 1 and applied[0]["changed"] == 0 and applied[0]["attempts"] == 2
    assert set(final) == {"alpha", "beta"}
    # Written once, by the other agent: the re-plan found nothing to change.
    assert len({rev for _, rev in final.values()}) == 1


def test_an_unavailable_store_is_waited_for(procs: ProcessGroup,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(startup, "RETRY_MAX", 1.0)
    cport = free_port()
    path, jobs = specs(procs.workdir)

    async def body() -> dict[str, tuple[bytes, int]]:
        async with Client([f"127.0.0.1:{cport}"], timeout=2) as c:
            applying = asyncio.ensure_future(startup.apply_at_start(c, jobs, path))
            # Not up yet: the apply keeps trying (and must not end, by error or otherwise).
            for _ in range(300):
                if waits() >= 2:
                    break
                await asyncio.sleep(0.1)
            assert waits() >= 2 and not applying.done()
            await asyncio.to_thread(start_coord, procs, cport=cport)
            await asyncio.wait_for(applying, 60)
            return await stored(c)

    with capture_logs() as logs:
        def waits() -> int:
            return sum(e["event"] == "agent.jobs_apply_waiting" for e in logs)
        final = asyncio.run(body())
    assert set(final) == {"alpha", "beta"}
    applied = [e for e in logs if e["event"] == "agent.jobs_applied"]
    assert len(applied) == 1 and applied[0]["changed"] == 2, logs
