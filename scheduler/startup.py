"""The agent's `--jobs FILE`: applied at start, in the background, until it is in the store.

Several agents usually start at once with the same file (the README's cluster recipe), and a
member may start before its peers: so a lost compare-and-set re-reads and re-plans (the next
plan is usually "nothing to change"), an unavailable store is waited for, and nothing here
ever stops the member or the worker it runs beside. Applying the same file again changes
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

import structlog

from coord.client import Client, ClientError
from scheduler.admin import ApplyConflict, apply_jobs
from scheduler.spec import JobSpec

log = structlog.get_logger("raftcron.agent")

RETRY_FIRST = 0.5
RETRY_MAX = 10.0


async def apply_at_start(client: Client, specs: list[JobSpec], source: Path) -> None:
    """Apply ``specs`` (prune off) until it succeeds; log each wait. Cancel to give up."""
    delay = RETRY_FIRST
    attempt = 0
    while True:
        attempt += 1
        try:
            plan = await apply_jobs(client, specs, prune=False, dry_run=False)
        except ApplyConflict:
            # Another agent applied meanwhile: re-read at once (after a short random pause,
            # so that agents racing with different files do not keep colliding).
            log.info("agent.jobs_apply_conflict", file=str(source), attempt=attempt)
            await asyncio.sleep(random.uniform(0.05, 0.3))
            continue
        except ClientError as err:
            log.warning("agent.jobs_apply_waiting", file=str(source), attempt=attempt,
                        error=str(err), retry_in_s=round(delay, 1))
        except Exception as err:  # noqa: BLE001 - the agent must outlive any failure here
            log.error("agent.jobs_apply_failed", file=str(source), attempt=attempt,
                      error=repr(err), retry_in_s=round(delay, 1))
        else:
            log.info("agent.jobs_applied", file=str(source), changed=len(plan.effective),
                     total=len(plan.changes), attempts=attempt)
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX)


async def cancel_and_wait(task: asyncio.Future[None] | None) -> None:
    """Cancel ``task`` (if any, and not done) and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
