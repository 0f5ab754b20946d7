"""Housekeeping: compacting the store's history and pruning each job's run history."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import structlog

from coord.client import ClientError, CompactedError, Compare, TxnResult, delete, txn_op
from scheduler import keys
from scheduler.claim import BATCH_MAX
from scheduler.spec import JobSpec
from scheduler.worker import decide
from scheduler.worker.state import Shared

log = structlog.get_logger("scheduler.worker")

PRUNE_EVERY = 10
"""Prune a job's run history on every PRUNE_EVERY-th finish (not on every one)."""
PRUNE_MARGIN = 120.0
"""Seconds past ``starting_deadline`` before a run record may be pruned: a skewed or slow
worker can still try to claim an occurrence that late, and the record is what stops it."""


class Housekeeper:
    def __init__(self, ctx: Shared) -> None:
        self.ctx = ctx
        self._finished: dict[str, int] = {}

    async def finished(self, spec: JobSpec) -> None:
        """A run of ``spec`` finished here: prune its history every PRUNE_EVERY-th time."""
        n = self._finished[spec.name] = self._finished.get(spec.name, 0) + 1
        if n % PRUNE_EVERY == 1:
            await self.prune(spec)

    async def prune(self, spec: JobSpec) -> None:
        """Keep ``history_limit`` records, never deleting one young enough to be claimed
        again, nor an active one; each delete is guarded by the record's mod revision, and
        they go to the store as one txn."""
        ctx = self.ctx
        horizon = ctx.clock.now() - timedelta(seconds=spec.starting_deadline + PRUNE_MARGIN)
        prefix = keys.runs_prefix(spec.name)
        assert ctx.store is not None
        try:
            # One read: ``count`` is the whole history, the page its oldest records.
            r = await ctx.client.get(prefix, prefix=True, limit=PRUNE_EVERY * 4)
            records = [(keys.name_from(kv.key, prefix), kv.value) for kv in r.kvs]
            doomed = [(records[i][0], r.kvs[i]) for i in decide.prunable(
                records, r.count, spec.history_limit, horizon, BATCH_MAX)]
            if not doomed:
                return
            res = await ctx.store.batcher.submit(
                spec.name, [], [txn_op([Compare.mod(kv.key) == kv.mod_revision],
                                       [delete(kv.key)], []) for _, kv in doomed])
            for (occ, _), sub in zip(doomed, res.responses, strict=True):
                if isinstance(sub, TxnResult) and sub.succeeded:
                    for old in (ctx.config.log_dir / spec.name).glob(f"{occ}.*.log"):
                        old.unlink(missing_ok=True)
        except ClientError as err:
            log.debug("run.prune_failed", job=spec.name, error=str(err))

    async def compactor(self) -> None:
        """Keep the store's history bounded (``WorkerConfig.compact_retention``).

        Every worker samples the store's revision each period; the worker ranked first
        among the live ones for the period compacts to its newest sample at least
        ``retention`` old. Views (jobs, workers, locks, ...) resume their watches from
        recent revisions and re-list if one was compacted, and nothing the scheduler
        decides reads history, so compaction never changes what runs."""
        ctx = self.ctx
        retention = ctx.config.compact_retention
        if retention <= 0:
            return
        period = min(max(retention / 10, 0.1), 60.0)
        samples = decide.Compaction(retention, [])
        while True:
            await asyncio.sleep(period)
            try:
                rev = (await ctx.client.get(keys.WORKERS, prefix=True, count_only=True,
                                            serializable=True)).header.revision
            except ClientError:
                continue
            now = time.monotonic()
            samples.samples.append((now, rev))
            target = samples.target(now)
            turn = str(int(time.time() // period))
            if not target or not decide.compacts(ctx.config.name, ctx.workers, turn):
                continue
            try:
                await ctx.client.compact(target)
                log.info("store.compacted", revision=target, retention=retention)
            except CompactedError:
                pass  # compacted at or past it already (another worker, an operator)
            except ClientError as err:
                log.warning("store.compact_failed", revision=target, error=str(err))
