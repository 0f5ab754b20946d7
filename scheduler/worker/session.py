"""The worker's session and its deadman.

The session is a lease (``session_ttl``) kept alive, with ``/cron/workers/<name>`` on it;
the lock of every run this worker starts lives on that lease. If the session may have
expired (no renewal for a whole TTL), the deadman kills every running job at once — before
the store can expire the lock and let another worker take over — and registers a new one.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import structlog

from coord.client import ClientError
from scheduler import keys
from scheduler.claim import ClaimStore, Identity
from scheduler.worker.state import Shared

log = structlog.get_logger("scheduler.worker")

VERSION = "0.1.0"


class Session:
    def __init__(self, ctx: Shared) -> None:
        self.ctx = ctx

    async def open(self) -> None:
        """Grant a lease and register on it, retrying until the store answers; a new
        :class:`ClaimStore` on the new lease carries the counters of the previous one."""
        ctx, config = self.ctx, self.ctx.config
        while True:
            try:
                granted_at = time.monotonic()
                grant = await ctx.client.grant(config.session_ttl)
                info = {"host": config.host, "pid": os.getpid(), "tags": config.tags,
                        "version": VERSION, "started_at": time.time()}
                await ctx.client.put(keys.worker_key(config.name), json.dumps(info),
                                     lease=grant.id)
                break
            except ClientError as err:
                log.warning("worker.session_failed", error=str(err))
                await asyncio.sleep(1.0)
        ctx.session = ctx.client.keep_alive(grant.id, grant.ttl, granted_at)
        previous = ctx.store
        store_class = ClaimStore if config.metrics is None else config.metrics.claim_store
        ctx.store = store_class(ctx.client, Identity(config.name, grant.id, host=config.host))
        stats = ctx.stats
        ctx.store.batcher.on_sent = lambda seconds: stats.add("txn", seconds)
        if previous is not None:  # the claim count and the attempts span sessions
            ctx.store.txns = previous.txns
            ctx.store.attempted = previous.attempted
            ctx.store.batcher.batches = previous.batcher.batches
            ctx.store.outbox = previous.outbox
        log.info("worker.registered", worker=config.name, lease=f"{grant.id:x}",
                 ttl=grant.ttl)

    async def deadman(self) -> None:
        """Kill every running job as soon as the session may have expired; re-register."""
        ctx = self.ctx
        while True:
            assert ctx.session is not None
            session = ctx.session
            await session.lost.wait()
            victims = [r for r in ctx.running.values() if r.claim.record.worker]
            log.error("worker.session_lost", worker=ctx.config.name, killing=len(victims))
            if ctx.config.metrics is not None:
                ctx.config.metrics.session_lost(len(victims))
            for r in victims:
                r.kill_reason = "deadman: session lease lost"
                if r.process is not None:
                    r.process.kill("deadman: session lease lost")
            await session.stop()
            if ctx.stopping:
                return
            await self.open()
