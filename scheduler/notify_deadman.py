"""Dead-man alerts: ``expect: {succeed_within: D}`` → ``overdue`` once, ``recovered`` once.

A worker looks, every few seconds, at the jobs that have an ``expect:`` and rank it first
among the live workers (rendezvous, as occurrences are spread): their state in
``/cron/deadman/<job>`` (``{"overdue": bool, "last_success": t}``) and their run records.
A job with no success for ``succeed_within`` (since its last success, or since a worker
first watched it) turns overdue; one that succeeds again recovers. Each change is one txn
that compares the state's mod revision and puts the new state together with its outbox
entries (:mod:`scheduler.notify`): when several workers decide the same change at once,
exactly one txn lands, so each event is recorded once, and a restart reads the state back
instead of firing again. The reason a job went without a success does not matter: failed,
skipped, missed, suspended, or no eligible worker — it is only overdue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import structlog

from coord.client import Client, ClientError, Compare, put
from scheduler.claim import RunRecord
from scheduler.keys import DEADMAN, deadman_key, run_key, runs_prefix
from scheduler.notify import entry_ops, run_body
from scheduler.plan import rank_workers
from scheduler.spec import JobSpec

log = structlog.get_logger("scheduler.notify")

STATE: Final = DEADMAN
MIN_EVERY: Final = 1.0
MAX_EVERY: Final = 30.0

_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def every(specs: list[JobSpec]) -> float:
    """Seconds between two checks: a fifth of the shortest ``succeed_within``, 1-30 s."""
    shortest = min((s.expect for s in specs if s.expect), default=None)
    if shortest is None:
        return MAX_EVERY
    return max(MIN_EVERY, min(MAX_EVERY, shortest / 5))


class DeadMan:
    """The checks of one worker. ``jobs()`` gives the current specs; ``me`` names it."""

    def __init__(self, client: Client, me: str, host: str,
                 jobs: Callable[[], list[JobSpec]],
                 workers: Callable[[], Iterable[str]] = lambda: ()) -> None:
        self.client = client
        self.me = me
        self.host = host
        self.jobs = jobs
        self.workers = workers
        """The live workers: a job is looked at by the first of them in its rendezvous
        order only (the others would find the same; the compare makes any overlap safe)."""
        self.fired: list[tuple[str, str]] = []
        """(job, event) this worker recorded, for tests and logs."""

    async def run(self) -> None:
        while True:
            specs = [s for s in self.jobs() if s.expect]
            live = list(self.workers())
            for spec in specs:
                if self.me in live and rank_workers(spec.name, "deadman", live)[0] != self.me:
                    continue
                with contextlib.suppress(ClientError):
                    await self.check(spec, time.time())
            await asyncio.sleep(every(specs))

    async def check(self, spec: JobSpec, now: float) -> str | None:
        """One look at ``spec``; returns the event it recorded (``overdue``/``recovered``),
        if any."""
        assert spec.expect is not None
        key = deadman_key(spec.name)
        cur = await self.client.get(key)
        runs = await self.client.get(runs_prefix(spec.name), prefix=True)
        best: RunRecord | None = None
        for kv in runs.kvs:
            try:
                rec = RunRecord.decode(kv.value)
            except ValueError:
                continue
            if rec.status == "succeeded" and (best is None or rec.finished_at > best.finished_at):
                best = rec
        last_ok = best.finished_at if best is not None else 0.0
        if not cur.kvs:
            # First look: the clock starts now (or at the newest success).
            state = {"overdue": False, "last_success": last_ok or now}
            await self.client.txn([Compare.create(key) == 0], [put(key, _dumps(state))], [])
            return None
        kv = cur.kvs[0]
        try:
            state = json.loads(kv.value)
            overdue = bool(state["overdue"])
            since = float(state["last_success"])
        except (ValueError, KeyError, TypeError):
            overdue, since = False, now  # unreadable: start over (rewritten below)
            state = {}
        event: str | None = None
        if overdue and last_ok > since:
            event = "recovered"
            new = {"overdue": False, "last_success": last_ok}
        elif not overdue and now - max(since, last_ok) > spec.expect:
            event = "overdue"
            new = {"overdue": True, "last_success": max(since, last_ok), "since": now}
        elif not overdue and (last_ok > since or not state):
            new = {"overdue": False, "last_success": max(since, last_ok)}
        else:
            return None
        ops = [put(key, _dumps(new))]
        if event is not None:
            ops += entry_ops(spec, event, self._body(spec, event, best, new, now),
                             f"{spec.name}/deadman-{int(now * 1000)}",
                             None if event == "overdue" or best is None
                             else run_key(best.job, best.occurrence))
        res = await self.client.txn([Compare.mod(key) == kv.mod_revision], ops, [])
        if not res.succeeded or event is None:
            return None
        self.fired.append((spec.name, event))
        log.warning("deadman." + event, job=spec.name, succeed_within=spec.expect,
                    last_success=new["last_success"])
        return event

    def _body(self, spec: JobSpec, event: str, best: RunRecord | None,
              new: dict[str, Any], now: float) -> dict[str, Any]:
        if event == "recovered" and best is not None:
            body = run_body(event, best)
        else:
            body = {"event": event, "job": spec.name, "occurrence": None, "run_id": None,
                    "status": event, "exit_code": None, "attempts": 0, "duration": None,
                    "output_tail": "", "worker": self.me, "host": self.host, "note": "",
                    "finished_at": None}
        body.update(succeed_within=spec.expect, last_success=new["last_success"], at=now)
        return body
