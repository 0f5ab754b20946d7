"""Lost runs, locks and records, backups and batches: who re-runs, records or drops an
occurrence when a holder dies, a write fails or a spec changes.

Workers run in-process with short TTLs against a coord subprocess, as in
``test_worker_lost.py``. Each test sets up the scenario and checks what a user would see
(run records, locks, job processes):

* a dead holder is recognised by its lease, not its name: a worker that restarted under the
  same name re-runs its own never-started run; a run found by the sweep of a non-eligible
  worker is re-run by an eligible one;
* a lock is never released while its run record is still active (finish write failed, run
  crashed, orphaned lock of a started run);
* a backup still runs an occurrence after the job spec was edited, and drops one of a job
  suspended meanwhile;
* a claim failing with LeaseNotFound in a batch does not fail the other members;
* an occurrence given up during an outage is still recorded missed, and one the store
  refuses to record is logged.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from coord.client import Client, LeaseNotFoundError, UnavailableError
from scheduler import admin, keys
from scheduler.claim import ClaimStore, Identity
from scheduler.plan import occurrence_id
from scheduler.plan import rank_workers as rank
from scheduler.worker.firing import Firing
from tests.helpers.procs import ProcessGroup, start_coord
from tests.scheduler.test_worker_faults import apply_text, until
from tests.scheduler.worker_util import _start, _status, _true, _views_show, _worker

# ---------------------------------------------------------------- lost runs
TAGGED = ("jobs:\n  - name: j\n    schedule: '0 0 1 1 *'\n    command: 'touch {marker}'\n"
          "    on_lost: rerun\n    tags: {{role: a}}\n")


def test_holder_restarted_under_its_name_reruns_its_never_started_run(
        procs: ProcessGroup, tmp_path: Path) -> None:
    """w1 claimed and died before the start; it restarted under the same name (a new
    lease). When the old lease expires, w1 — the only worker allowed to run the job — is
    not mistaken for the dead holder: the run is marked lost and re-run."""
    coord = start_coord(procs)
    marker = tmp_path / "ran"

    async def main() -> None:
        await apply_text(coord.endpoint, TAGGED.format(marker=marker))
        async with Client([coord.endpoint]) as c:
            old = await c.grant(30)  # w1's previous incarnation
            await c.put(keys.worker_key("w1"), json.dumps({"tags": {"role": "a"}}),
                        lease=old.id)
            occ = occurrence_id(datetime.now(UTC))
            assert await ClaimStore(c, Identity("w1", old.id)).claim("j", occ, exclusive=True)
            w1 = _worker("w1", coord.endpoint, tmp_path, tags={"role": "a"})
            w2 = _worker("w2", coord.endpoint, tmp_path)  # cannot run the job
            stop, tasks = await _start([w1, w2])
            try:
                assert w1.store is not None
                new = w1.store.me.lease

                async def views_show_restart() -> bool:
                    return all(w.ctx.worker_leases.get("w1") == new for w in (w1, w2))
                await until(views_show_restart, 10, "both views to show w1's new session")
                await c.revoke(old.id)  # the old incarnation's lease ends

                async def rerun() -> bool:
                    return marker.exists() and await _status(c, "j", occ) == "succeeded"
                await until(rerun, 10, "the never-started run to be re-run on w1")
            finally:
                stop.set()
                await asyncio.gather(*tasks)
    asyncio.run(main())


def test_never_started_run_found_by_the_sweep_is_rerun_by_an_eligible_worker(
        procs: ProcessGroup, tmp_path: Path) -> None:
    """A run whose lock went before any worker watched (only the sweep can find it): a
    sweep by a worker that may not run the job leaves the re-run to one that may."""
    coord = start_coord(procs)
    marker = tmp_path / "ran"

    async def main() -> None:
        await apply_text(coord.endpoint, TAGGED.format(marker=marker))
        async with Client([coord.endpoint]) as c:
            ghost = await c.grant(30)
            occ = occurrence_id(datetime.now(UTC))
            assert await ClaimStore(c, Identity("ghost", ghost.id)).claim("j", occ,
                                                                           exclusive=True)
            await c.revoke(ghost.id)
            w1 = _worker("w1", coord.endpoint, tmp_path, tags={"role": "a"}, sweep=2.0)
            others = [_worker(f"x{i}", coord.endpoint, tmp_path) for i in range(2)]
            stop, tasks = await _start([w1, *others])
            try:
                await until(lambda: _views_show([w1, *others], {"w1", "x0", "x1"}), 10,
                            "the workers views")
                for w in others:  # sweeps by workers that cannot run the job
                    await w.reaper.sweep_runs()

                async def rerun() -> bool:
                    return marker.exists() and await _status(c, "j", occ) == "succeeded"
                await until(rerun, 15, "the run to be re-run by w1")
            finally:
                stop.set()
                await asyncio.gather(*tasks)
    asyncio.run(main())


# ---------------------------------------------------------------- locks and records
def test_a_lock_is_never_freed_under_an_active_record(
        procs: ProcessGroup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder itself frees a lock while the run record is still active in three
    places: a claim abandoned whose `missed` write fails, a run whose worker code crashed
    and whose `failed` write fails, an orphaned lock of a started run. Each record must end
    terminal and its lock free (a lock freed on a live lease reads as a normal finish, and
    the record would stay active forever)."""
    coord = start_coord(procs)
    failing = {"a", "b"}
    real_finish = ClaimStore.finish

    async def finish_fails_once(self: ClaimStore, claim: Any, **changes: Any) -> bool:
        if claim.job in failing:
            failing.discard(claim.job)
            raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "injected: store unavailable")
        return await real_finish(self, claim, **changes)
    monkeypatch.setattr(ClaimStore, "finish", finish_fails_once)
    jobs = "jobs:\n" + "".join(f"  - name: {j}\n    schedule: '0 0 1 1 *'\n"
                               "    command: 'sleep 30'\n" for j in "abc")

    async def main() -> None:
        await apply_text(coord.endpoint, jobs)
        w1 = _worker("w1", coord.endpoint, tmp_path, sweep=1.0)
        w2 = _worker("w2", coord.endpoint, tmp_path)
        stop, tasks = await _start([w1, w2])
        occ = occurrence_id(datetime.now(UTC))
        try:
            store = w1.store
            assert store is not None
            # a: a claim abandoned (as when claimed too late to start).
            claim_a = await store.claim("a", occ, exclusive=True)
            assert claim_a is not None
            await w1.runner.abandon(claim_a, "test: claimed too late")
            # b: the worker's own code fails before the start.

            async def crash(*_: Any) -> None:
                raise RuntimeError("injected worker bug")
            monkeypatch.setattr(w1.runner, "attempts", crash)
            claim_b = await store.claim("b", occ, exclusive=True)
            assert claim_b is not None
            await asyncio.create_task(w1.runner.execute(w1.jobs["b"], claim_b))  # a run task
            # c: a started run whose worker lost track of it (its lock stays on the lease).
            claim_c = await store.claim("c", occ, exclusive=True)
            assert claim_c is not None
            assert await store.update(claim_c, status="running", started_at=time.time())
            async with Client([coord.endpoint]) as c:
                async def settled() -> bool:
                    for job in "abc":
                        if await _status(c, job, occ) in ("claimed", "running", None):
                            return False
                        if await c.get_one(keys.lock_key(job)) is not None:
                            return False
                    return True
                await until(settled, 15, "every record to end and every lock to be free")
                assert await _status(c, "a", occ) == "missed"
                assert await _status(c, "c", occ) == "lost"
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    asyncio.run(main())


# ---------------------------------------------------------------- backups
def test_backup_runs_an_occurrence_after_the_spec_was_edited(
        procs: ProcessGroup, tmp_path: Path) -> None:
    """The first-ranked worker is registered but dead; the job is edited between the fire
    and the backup's turn. The backup still claims and runs the occurrence."""
    coord = start_coord(procs)
    marker = tmp_path / "ran"
    job = "jobs:\n  - name: j\n    schedule: '0 0 1 1 *'\n" \
          f"    command: 'echo $V >> {marker}'\n    env: {{V: '{{v}}'}}\n"

    async def main() -> None:
        await apply_text(coord.endpoint, job.replace("{v}", "1"))
        async with Client([coord.endpoint]) as c:
            ghost_lease = await c.grant(60)
            base = occurrence_id(datetime.now(UTC))
            # An occurrence id for which the dead worker ranks first.
            occ = next(o for o in (f"{base}-manual-{i:04x}" for i in range(1000))
                       if rank("j", o, ["ghost", "w1"])[0] == "ghost")
            await c.put(keys.worker_key("ghost"), json.dumps({"tags": {}}),
                        lease=ghost_lease.id)
            w1 = _worker("w1", coord.endpoint, tmp_path, grace=3.0)
            stop, tasks = await _start([w1])
            try:
                await until(lambda: _views_show([w1], {"ghost"}), 10, "w1 to see ghost")
                fired_before = len(w1.stats.samples.get("wake", ()))
                await c.put(keys.trigger_key("j", occ), json.dumps({"at": time.time()}),
                            lease=ghost_lease.id)

                async def fired() -> bool:
                    return len(w1.stats.samples.get("wake", ())) > fired_before
                await until(fired, 5, "w1 to see the fire (its backup timer is set)")
                await apply_text(coord.endpoint, job.replace("{v}", "2"))  # the edit

                async def ran() -> bool:
                    return await _status(c, "j", occ) == "succeeded"
                await until(ran, 15, "the backup to run the occurrence")
            finally:
                stop.set()
                await asyncio.gather(*tasks)
    asyncio.run(main())


# ---------------------------------------------------------------- batches
def test_a_claim_refused_for_its_lease_does_not_fail_its_batch(procs: ProcessGroup) -> None:
    coord = start_coord(procs)

    async def main() -> None:
        async with Client([coord.endpoint]) as c:
            lease = await c.grant(30)
            store = ClaimStore(c, Identity("w", lease.id))
            occ = occurrence_id(datetime.now(UTC))
            claim = await store.claim("done", occ, exclusive=True)
            assert claim is not None
            await c.revoke(lease.id)  # the session ends while the run finishes
            # One loop turn: the finish and a claim on the dead lease go as one batch.
            finished, claimed = await asyncio.gather(
                store.finish(claim, status="succeeded", finished_at=time.time()),
                store.claim("other", occ, exclusive=True), return_exceptions=True)
            assert isinstance(claimed, LeaseNotFoundError)
            assert finished is True
            assert await _status(c, "done", occ) == "succeeded"
    asyncio.run(main())


# ---------------------------------------------------------------- no start, no record
def test_an_occurrence_given_up_during_an_outage_is_still_recorded_missed(
        procs: ProcessGroup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store fails every claim until the starting deadline, and still fails when the
    worker gives up: the `missed` record is written once the store answers again (it used
    to be dropped, leaving the occurrence with neither a start nor a record)."""
    coord = start_coord(procs)
    outage = {"missed_writes": 2}

    async def claim_fails(self: ClaimStore, *_: Any, **__: Any) -> Any:
        raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "injected: no leader")
    real_missed = ClaimStore.record_missed

    async def missed_fails_twice(self: ClaimStore, job: str, occ: str, **kw: Any) -> bool:
        if outage["missed_writes"] > 0:
            outage["missed_writes"] -= 1
            raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "injected: no leader")
        return await real_missed(self, job, occ, **kw)
    monkeypatch.setattr(ClaimStore, "claim", claim_fails)
    monkeypatch.setattr(ClaimStore, "record_missed", missed_fails_twice)

    async def main() -> None:
        await apply_text(coord.endpoint,
                         "jobs:\n  - name: j\n    schedule: '0 0 1 1 *'\n"
                         "    command: 'true'\n    starting_deadline: 1s\n")
        w = _worker("w1", coord.endpoint, tmp_path)
        stop, tasks = await _start([w])
        try:
            async with Client([coord.endpoint]) as c:
                occ = await admin.trigger(c, "j")

                async def recorded() -> bool:
                    return await _status(c, "j", occ) == "missed"
                await until(recorded, 15, "the occurrence to be recorded missed")
            assert outage["missed_writes"] == 0
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    asyncio.run(main())


def test_backup_drops_an_occurrence_of_a_job_suspended_meanwhile(
        procs: ProcessGroup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As above, but the edit suspends the job: the backup's turn comes and it does not
    claim the occurrence."""
    coord = start_coord(procs)
    job = "jobs:\n  - name: j\n    schedule: '0 0 1 1 *'\n    command: 'true'\n" \
          "    suspend: {s}\n"
    turns: list[str] = []
    real_due = Firing._backup_due

    def spy(self: Firing, entry: Any, instant: datetime, occ: str, *rest: Any) -> None:
        real_due(self, entry, instant, occ, *rest)
        turns.append(occ)
    monkeypatch.setattr(Firing, "_backup_due", spy)

    async def main() -> None:
        await apply_text(coord.endpoint, job.format(s="false"))
        async with Client([coord.endpoint]) as c:
            ghost_lease = await c.grant(60)
            base = occurrence_id(datetime.now(UTC))
            occ = next(o for o in (f"{base}-manual-{i:04x}" for i in range(1000))
                       if rank("j", o, ["ghost", "w1"])[0] == "ghost")
            await c.put(keys.worker_key("ghost"), json.dumps({"tags": {}}),
                        lease=ghost_lease.id)
            w1 = _worker("w1", coord.endpoint, tmp_path, grace=2.0)
            stop, tasks = await _start([w1])
            try:
                await until(lambda: _views_show([w1], {"ghost"}), 10, "w1 to see ghost")
                fired_before = len(w1.stats.samples.get("wake", ()))
                await c.put(keys.trigger_key("j", occ), json.dumps({"at": time.time()}),
                            lease=ghost_lease.id)

                async def fired() -> bool:
                    return len(w1.stats.samples.get("wake", ())) > fired_before
                await until(fired, 5, "w1 to see the fire (its backup timer is set)")
                await apply_text(coord.endpoint, job.format(s="true"))

                async def suspended() -> bool:
                    return w1.jobs["j"].spec.suspend
                await until(suspended, 5, "w1 to see the suspension")
                await until(lambda: _true(occ in turns), 10, "the backup's turn")
                assert not any(t.get_name() == "occ:j" for t in w1.ctx.tasks)
                assert await _status(c, "j", occ) is None
            finally:
                stop.set()
                await asyncio.gather(*tasks)
    asyncio.run(main())


def test_a_missed_occurrence_the_store_refuses_to_record_is_logged(tmp_path: Path) -> None:
    """After a restart, occurrences past their starting deadline are recorded `missed`; a
    store error on that write is reported (it used to be dropped without a word)."""
    from structlog.testing import capture_logs

    from coord.client import UnavailableError
    from scheduler.spec import load_jobs_text

    class Refusing:
        async def record_missed(self, job: str, occurrence: str, **_: Any) -> bool:
            raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")

    w = _worker("w1", "127.0.0.1:1", tmp_path)
    w.store = Refusing()  # type: ignore[assignment]
    spec = load_jobs_text("jobs:\n  - name: j\n    schedule: '@hourly'\n"
                          "    command: 'true'\n")[0]
    instant = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)

    with capture_logs() as logs:
        asyncio.run(w.firing.record_missed(spec, instant))
    assert [(e["event"], e["occurrence"], e["log_level"]) for e in logs] == [
        ("run.missed_unrecorded", occurrence_id(instant), "warning")]
    assert "no leader" in logs[0]["error"]
