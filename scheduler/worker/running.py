"""Running: a won claim becomes a process, attempts and retries, and fenced writes.

A claim sent ahead starts at its instant (handed back if the job was suspended or deleted
meanwhile); each attempt is spawned, marked ``running``, waited for and recorded with the
claim's fencing token; a failed attempt is retried per the spec; the end is written
(fenced) while releasing the lock. Kill requests (``/cron/killer/``) end runs here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog

from coord.aiotools import within
from coord.client import ClientError, WatchBatch
from scheduler import keys
from scheduler.attempts import attempt_entry
from scheduler.claim import ACTIVE, Claim
from scheduler.decode import BadValue, json_object, report_bad
from scheduler.executor import JobProcess, RunRequest, RunResult
from scheduler.output_stream import OutputPublisher
from scheduler.plan import MANUAL_SUFFIX
from scheduler.spec import JobSpec
from scheduler.worker import decide
from scheduler.worker.housekeeping import Housekeeper
from scheduler.worker.state import JobEntry, Running, Shared

log = structlog.get_logger("scheduler.worker")

RUNNING_MARK_DELAY = 0.25
"""Seconds a run may take before its record is updated from `claimed` to `running`."""


class Runner:
    def __init__(self, ctx: Shared, keeper: Housekeeper) -> None:
        self.ctx = ctx
        self.keeper = keeper
        self._base_env = dict(os.environ)
        """The environment jobs inherit: the worker's, read once."""
        self.deciding: dict[tuple[str, str], int] = {}
        """(job, occurrence) → claim loops (``Firing``) still running for it: a claim of
        ours found for it may yet be adopted there, so the orphan sweep leaves it alone
        (the loop registers it; a run it hands over is then in ``ctx.running``)."""

    async def execute(self, entry: JobEntry, claim: Claim,
                      instant: datetime | None = None) -> None:
        """Run a won claim to its end (in the calling task, renamed ``run:…`` so a graceful
        stop waits for it); a bug here still records the run and frees the lock."""
        ctx = self.ctx
        spec = entry.spec
        key = (claim.job, claim.occurrence)
        run = Running(claim)
        # Two claims of one occurrence can both get here: a stale one (its answer came back
        # after the session that made it was lost) and the re-run that took it over (a
        # higher token). The newer one is tracked; the stale one never starts (its session
        # or fenced writes stop it) and, ending, leaves the other's entry alone: untracked,
        # a live run's lock would be freed by the orphan sweep (seeds 405565, 411299).
        tracked = ctx.running.get(key)
        if tracked is None or tracked.claim.token < claim.token:
            ctx.running[key] = run
        # Live output for `jobs logs --follow`; closed after the run's last record write.
        follow = OutputPublisher(ctx.client, run)
        task = asyncio.current_task()
        if task is not None:
            task.set_name(f"run:{claim.job}:{claim.occurrence}")
            ctx.tasks.add(task)
        try:
            await self.attempts(spec, run, instant)
        except asyncio.CancelledError:
            # Nobody will wait for the process any more: it must not outlive its run.
            if run.process is not None:
                run.process.kill("run cancelled")
            raise
        except Exception as err:  # a bug must not leave the job locked
            log.exception("run.crashed", job=claim.job, occurrence=claim.occurrence)
            if run.process is not None:
                run.process.kill("worker error")
            assert ctx.store is not None
            finished = False
            with contextlib.suppress(ClientError):
                finished = await ctx.store.finish(claim, status="failed",
                                                  finished_at=time.time(),
                                                  note=f"worker error: {err!r}")
            if not finished:
                await self.release_settled(claim)
        finally:
            if ctx.running.get(key) is run:
                del ctx.running[key]
            await follow.close()

    async def _await_instant(self, run: Running, instant: datetime) -> bool:
        """A claim sent ahead of its instant (``claim_ahead``) starts at the instant, never
        before. False if it was handed back instead, because the job was suspended or
        deleted while it waited, or its spec is no longer the one the claim was planned
        from (``_spec_current``: also checked for a claim whose answer came back late).
        A worker that begins to stop meanwhile still starts it at the instant (its stop
        waits for its runs); a kill request or a lost session while waiting is handled by
        the start checks that follow, as for any claim."""
        ctx = self.ctx
        wait = (instant - ctx.clock.now()).total_seconds()
        if wait <= 0:
            if ctx.suspended_at(run.claim.job, instant):
                # The claim's answer came back after the instant, and the job was
                # suspended at it: not started late (the resume's skipped records pass
                # over an occurrence already claimed, seed 510512), recorded skipped.
                await self._not_started(run.claim, "skipped", "job suspended at its instant")
                return False
            return self._spec_current(run.claim) or await self._hand_back(
                run.claim, "job deleted or edited since the claim")
        while wait > 0:  # a timer may fire a hair early: never start before the instant
            await asyncio.sleep(wait)
            wait = (instant - ctx.clock.now()).total_seconds()
        claim = run.claim
        if self._spec_current(claim) and not ctx.is_suspended(claim.job):
            return True
        return await self._hand_back(claim, "job suspended, deleted or edited")

    def _spec_current(self, claim: Claim) -> bool:
        """The job is in this worker's view and, for a scheduled occurrence, still at the
        spec revision the claim was planned from. A claim lands only while that holds
        (``claim.spec_guard``), but its answer may come back seconds later (a slow path):
        a job deleted or edited meanwhile, and seen so, must not start its old one."""
        entry = self.ctx.jobs.get(claim.job)
        if entry is None:
            return False
        planned = claim.record.spec_revision
        return (planned <= 0 or MANUAL_SUFFIX in claim.occurrence
                or entry.revision == planned)

    async def _not_started(self, claim: Claim, status: str, note: str) -> None:
        """Settle a claimed run that will not start: its final record, then the lock."""
        assert self.ctx.store is not None
        if not await self.write(claim, self.ctx.store.finish, status=status,
                                finished_at=time.time(), note=note):
            await self.release_settled(claim)
        log.warning("run.not_started", job=claim.job, occurrence=claim.occurrence,
                    token=claim.token, run_id=claim.record.run_id, status=status,
                    reason=note)

    async def _hand_back(self, claim: Claim, reason: str) -> bool:
        """Undo a claim that must not start; always False (it was not started)."""
        handed = False
        assert self.ctx.store is not None
        with contextlib.suppress(ClientError):
            handed = await self.ctx.store.hand_back(claim)
        # Not handed back: the record moved on (declared lost) or the store did not answer;
        # the lock then goes with the session and the lost-run detection records the run.
        log.info("run.handed_back", job=claim.job, occurrence=claim.occurrence,
                 reason=reason, done=handed)
        return False

    async def attempts(self, spec: JobSpec, run: Running, instant: datetime | None) -> None:
        ctx = self.ctx
        store = ctx.store
        assert store is not None
        claim = run.claim
        bound = log.bind(job=claim.job, occurrence=claim.occurrence, token=claim.token,
                         run_id=claim.record.run_id)
        attempt = claim.record.attempt
        result: RunResult | None = None
        if instant is not None and not await self._await_instant(run, instant):
            return
        while True:
            if not ctx.session_is(claim.lease) or run.kill_reason is not None:
                # The session this claim lives on is gone (deadman) or the run was killed
                # while waiting: starting now could overlap a run elsewhere.
                await self._not_started(claim, decide.not_started_status(run.kill_reason),
                                        run.kill_reason or "session lost before the start")
                return
            # With `on_lost: rerun` the record must say `running` *before* the process
            # exists: a lost run is re-run only if it provably never started. Otherwise the
            # mark is written right after the spawn, keeping a store round trip off the
            # fire-lag path (a run lost in between is recorded lost, never re-run).
            # A late claim (its answer lost or slow) is marked first too, with its lock
            # compared: its session lease may have expired meanwhile, freeing the lock for
            # a later occurrence, and it must not start then.
            late = claim.late and claim.holds_lock and attempt == claim.record.attempt
            mark_first = spec.on_lost == "rerun" or late
            mark = store.start_held if late else store.update
            if mark_first and not await self.write(claim, mark, status="running",
                                                   started_at=time.time(), attempt=attempt):
                bound.warning("run.fenced_out", stage="start")
                await self.release_settled(claim)
                return
            if mark_first and run.kill_reason is None and not self._spec_current(claim):
                # The mark's answer can be seconds late too: a job deleted or edited
                # meanwhile (and seen so) does not start its old occurrence.
                run.kill_reason = "job deleted or edited before the start"
            if mark_first and (run.kill_reason is not None
                               or not ctx.session_is(claim.lease)):
                continue  # killed (or the session lost) while the mark was written
            request = RunRequest.from_spec(spec, occurrence=claim.occurrence,
                                           run_id=claim.record.run_id,
                                           fencing_token=claim.token, attempt=attempt)
            # One log file per run, so overlapping runs (concurrency: allow) never mix.
            log_path = ctx.config.log_dir / claim.job / f"{claim.occurrence}.{attempt}.log"
            proc = JobProcess(request, log_path=log_path, clock=ctx.clock,
                              base_env=self._base_env)
            run.process = proc
            t_spawn = time.monotonic()
            try:
                await proc.start()
            except Exception as err:  # noqa: BLE001 - any spawn failure ends this run cleanly
                # (ExecutorError for a bad command or workdir; anything else is a bug, but
                # must still release the lock rather than leave the job blocked).
                bound.error("run.spawn_failed", error=str(err))
                now = time.time()
                tried = attempt_entry(attempt, started_at=now, finished_at=now, exit_code=None,
                                      signal=None, status="failed", log=None, note=str(err))
                if not await self.write(claim, store.finish, status="failed",
                                        finished_at=now, note=str(err), attempt=attempt,
                                        attempts=[*claim.record.attempts, tried]):
                    await self.release_settled(claim)
                return
            ctx.stats.add("spawn", time.monotonic() - t_spawn)
            if instant is not None and attempt == claim.record.attempt:
                ctx.stats.add("fire", (ctx.clock.now() - instant).total_seconds())
            bound.info("run.started", attempt=attempt, pid=proc.pid, host=ctx.config.host,
                       log=str(log_path))
            started_at = time.time()
            result = None
            if not mark_first:
                # Most runs are short: mark `running` only if the process is still going
                # after RUNNING_MARK_DELAY, so a quick run costs two writes (claim, finish).
                with contextlib.suppress(TimeoutError):
                    result = await within(proc.wait(), RUNNING_MARK_DELAY)
                if result is None and not await self.write(
                        claim, store.update, status="running", started_at=started_at,
                        attempt=attempt):
                    # Someone declared this run lost meanwhile: it is not ours any more.
                    proc.kill("fenced out: the run was declared lost")
                    run.kill_reason = "fenced out"
            if result is None:
                result = await proc.wait()
            status = decide.end_status(result, run.kill_reason)
            # One line per run end, at a level that says how it went (README, "Logs").
            end_level = {"succeeded": "info", "lost": "error"}.get(status, "warning")
            getattr(bound, end_level)("run.finished", attempt=attempt, status=status,
                                      exit_code=result.exit_code, signal=result.signal,
                                      duration=round(result.duration, 3),
                                      note=run.kill_reason or result.kill_reason or "")
            retry = decide.retry_due(status, attempt, spec.retries, run.kill_reason,
                                     ctx.stopping)
            finished_at = time.time()
            note = run.kill_reason or result.kill_reason or ""
            # Every attempt is kept (start, end, exit, status, log), not only the last one.
            tried = attempt_entry(attempt, started_at=started_at, finished_at=finished_at,
                                  exit_code=result.exit_code, signal=result.signal,
                                  status=status, log=log_path, note=note)
            fields = dict(exit_code=result.exit_code, signal=result.signal,
                          output_tail=result.output_tail, finished_at=finished_at,
                          started_at=started_at, note=note, attempt=attempt,
                          attempts=[*claim.record.attempts, tried])
            if not retry:
                if await self.write(claim, store.finish, status=status, **fields):
                    await self.keeper.finished(spec)
                else:
                    bound.warning("run.fenced_out", stage="finish")
                    await self.release_settled(claim)
                return
            delay = spec.retry_delay(attempt)
            if not await self.write(claim, store.update, status="retrying", **fields):
                bound.warning("run.fenced_out", stage="retry")
                await self.release_settled(claim)
                return
            bound.info("run.retrying", attempt=attempt, delay=delay)
            await asyncio.sleep(delay)
            attempt += 1

    async def write(self, claim: Claim, op: Callable[..., Awaitable[bool]],
                    **changes: Any) -> bool:
        """A fenced write of the run record, retried through store outages.

        False means the run is no longer this worker's (someone marked it lost, or the
        session is gone). When a write's outcome is unknown, the record is read back: if it
        already holds this write, that counts as done; if it is untouched, the write is
        retried; anything else means another writer moved it on.
        """
        store = self.ctx.store
        assert store is not None
        delay = 0.1
        while True:
            try:
                return await op(claim, **changes)
            except ClientError as err:
                log.warning("run.write_retry", job=claim.job, occurrence=claim.occurrence,
                            error=str(err))
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                if not self.ctx.session_is(claim.lease):
                    return False
                try:
                    rec, kv = await store.get_run_kv(claim.job, claim.occurrence)
                    break
                except ClientError:
                    continue
            if rec is None or kv is None:
                return False
            if kv.mod_revision == claim.revision:
                continue  # the write did not land: try it again
            landed = rec.run_id == claim.record.run_id and all(
                getattr(rec, k) == v for k, v in changes.items() if hasattr(rec, k))
            if landed:
                claim.revision = kv.mod_revision
            return landed

    async def abandon(self, claim: Claim, reason: str) -> None:
        """Never start this claim: record why (fenced) and free its lock (if still ours)."""
        store = self.ctx.store
        assert store is not None
        log.warning("run.abandoned", job=claim.job, occurrence=claim.occurrence, reason=reason)
        finished = False
        with contextlib.suppress(ClientError):
            finished = await store.finish(claim, status="missed", finished_at=time.time(),
                                          note=reason)
        if not finished:
            await self.release_settled(claim)

    async def release_settled(self, claim: Claim) -> None:
        """Free the lock of a run whose final write did not land — only if its record is no
        longer active for this run (someone marked it lost, or it is gone). A lock freed
        under an active record would read as a normal finish to the other workers; left
        alone, it goes with the session lease, and the lost-run detection sees that."""
        store = self.ctx.store
        assert store is not None
        with contextlib.suppress(ClientError):
            rec, _ = await store.get_run_kv(claim.job, claim.occurrence)
            if rec is not None and rec.run_id == claim.record.run_id and rec.status in ACTIVE:
                log.warning("lock.kept", job=claim.job, occurrence=claim.occurrence,
                            reason="its run record is still active")
                return
            await store.release_lock(claim)

    # ------------------------------------------------------------------ kills
    async def request_kill(self, job: str, occurrence: str | None, reason: str) -> None:
        client = self.ctx.client
        grant = await client.grant(5)
        body = json.dumps({"occurrence": occurrence, "reason": reason,
                           "by": self.ctx.config.name})
        await client.put(keys.killer_key(job), body, lease=grant.id)

    async def on_killer_batch(self, batch: WatchBatch) -> None:
        for e in batch.events:
            if not e.is_put:
                continue
            job = keys.job_from(e.kv.key, keys.KILLERS)
            try:
                if job is None:
                    raise BadValue("not /cron/killer/<valid job name>")
                req = json_object(e.kv.value)
                wanted = req.get("occurrence")
                if wanted is not None and not keys.valid_occurrence(wanted):
                    raise BadValue("occurrence is not an occurrence id")
            except BadValue as err:
                report_bad(e.kv.key, e.kv.mod_revision, str(err), "killers")
                continue
            now = self.ctx.clock.now()
            for (j, occ), r in list(self.ctx.running.items()):
                if j != job or wanted not in (None, occ):
                    continue
                if wanted is None and decide.not_due(occ, now):
                    continue  # "kill the job" means its runs, not a claim sent ahead
                r.kill_reason = f"kill requested: {req.get('reason', '')}".strip()
                if r.process is not None:
                    r.process.kill(r.kill_reason)
