"""scheduler.claim: the claim protocol's txns against a real coord member.

Each test runs one in-process member (no subprocess, no socket between client and member)
and two or three ``ClaimStore`` identities, each on its own session lease, as separate
workers would be. What is checked is what the scheduler's promises rest on: an exclusive
(``forbid``/``replace``) claim never succeeds while another run of the job holds the lock;
an occurrence is claimed at most once, ever; fencing tokens increase across holders and
takeovers; a holder whose run was declared lost or taken over cannot write about it nor
free a lock that is no longer its own; a lost session leaves a run that anyone may mark
``lost``, but a live one cannot be.

Every test is bounded by a 20 s timeout; each txn answers in milliseconds, so a broken
guard fails an assertion at once rather than a wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from coord.client import Client, LeaseNotFoundError
from coord.server.server import CoordServer
from scheduler import keys, suspension
from scheduler.claim import Claim, ClaimStore, Identity, LockHolder, RunRecord
from tests.helpers.member import member_config

J = "job"
OCC = ["20261206T120000Z", "20261206T120100Z", "20261206T120200Z", "20261206T120300Z"]

Body = Callable[[Client, Callable[[str], Awaitable[ClaimStore]]], Awaitable[None]]


def _run(tmp_path: Path, body: Body) -> None:
    """Run ``body(client, new_store)`` against a fresh member; ``new_store(name)`` is a
    ClaimStore for a worker ``name`` on a new 30 s session lease."""
    async def main() -> None:
        config = member_config(tmp_path / "n1")
        server = CoordServer(config)
        await server.start()
        try:
            addr = config.listen_client
            async with Client([addr], channels=server.channels()) as c:
                async def new_store(name: str) -> ClaimStore:
                    lease = (await c.grant(30)).id
                    return ClaimStore(c, Identity(worker=name, lease=lease))
                async with asyncio.timeout(20):
                    await body(c, new_store)
        finally:
            await server.stop()

    asyncio.run(main())


async def _record(c: Client, occ: str) -> tuple[RunRecord, int]:
    """The run record of (J, occ) and its mod revision."""
    kv = await c.get_one(keys.run_key(J, occ))
    assert kv is not None, f"no run record for {occ}"
    return RunRecord.decode(kv.value), kv.mod_revision


async def _lock(c: Client) -> tuple[LockHolder, int] | None:
    """The lock holder of J and the lock's create revision (the holder's token)."""
    kv = await c.get_one(keys.lock_key(J))
    return None if kv is None else (LockHolder.decode(kv.value), kv.create_revision)


# -- the exclusive-lock check (forbid / replace) ------------------------------------------

def test_an_exclusive_claim_fails_while_another_run_holds_the_lock(tmp_path: Path) -> None:
    """The next occurrence of a forbid job, due while the previous run holds the lock, is
    not claimed — by another worker or by the holder itself — and leaves no run record, so
    the worker can record it ``skipped``. Once the run has finished, a later occurrence is
    claimed."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        a, b = await new_store("a"), await new_store("b")
        first = await a.claim(J, OCC[0], exclusive=True)
        assert first is not None and first.holds_lock
        assert await a.update(first, status="running", started_at=1.0)

        assert await b.claim(J, OCC[1], exclusive=True) is None
        assert await a.claim(J, OCC[1], exclusive=True) is None
        assert await c.get_one(keys.run_key(J, OCC[1])) is None, "a refused claim wrote"
        assert await b.record_missed(J, OCC[1], status="skipped", note="previous run running")
        assert (await _record(c, OCC[1]))[0].status == "skipped"
        held = await _lock(c)
        assert held is not None and held[0].occurrence == OCC[0] and held[1] == first.token

        assert await a.finish(first, status="succeeded", exit_code=0)
        assert await _lock(c) is None
        third = await b.claim(J, OCC[2], exclusive=True)
        assert third is not None and third.holds_lock
        # a skipped occurrence is never claimed later
        assert await a.claim(J, OCC[1], exclusive=True) is None
    _run(tmp_path, body)


def test_concurrent_exclusive_claims_of_two_occurrences_one_wins(tmp_path: Path) -> None:
    """Two workers claiming different occurrences of one forbid job at the same moment
    (and one worker claiming two, batched in one loop turn): exactly one claim wins."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        a, b = await new_store("a"), await new_store("b")
        got = await asyncio.gather(a.claim(J, OCC[0], exclusive=True),
                                   b.claim(J, OCC[1], exclusive=True),
                                   a.claim(J, OCC[2], exclusive=True))
        won = [cl for cl in got if cl is not None]
        assert len(won) == 1, got
        held = await _lock(c)
        assert held is not None and held[0].occurrence == won[0].occurrence
    _run(tmp_path, body)


def test_allow_claims_run_side_by_side_and_only_the_lock_holder_frees_the_lock(
        tmp_path: Path) -> None:
    """``concurrency: allow``: a second occurrence is claimed while the first runs; the
    lock shows the first; the second finishing does not free the first's lock."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        a, b = await new_store("a"), await new_store("b")
        first = await a.claim(J, OCC[0], exclusive=False)
        second = await b.claim(J, OCC[1], exclusive=False)
        assert first is not None and second is not None
        assert first.holds_lock and not second.holds_lock
        assert second.token > first.token
        assert await b.finish(second, status="succeeded")
        held = await _lock(c)
        assert held is not None and held[1] == first.token, "a non-holder freed the lock"
        assert await a.finish(first, status="succeeded")
        assert await _lock(c) is None
    _run(tmp_path, body)


def test_an_occurrence_is_claimed_once_ever(tmp_path: Path) -> None:
    """A second claim of the same occurrence fails while it runs and after it finished,
    whatever the concurrency, by whichever worker."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        a, b = await new_store("a"), await new_store("b")
        first = await a.claim(J, OCC[0], exclusive=True)
        assert first is not None
        assert await b.claim(J, OCC[0], exclusive=False) is None
        assert await a.finish(first, status="succeeded")
        assert await b.claim(J, OCC[0], exclusive=True) is None
        assert await b.claim(J, OCC[0], exclusive=False) is None
        assert (await _record(c, OCC[0]))[0].worker == "a"
    _run(tmp_path, body)


# -- fencing tokens -----------------------------------------------------------------------

def test_fencing_tokens_increase_across_holders_and_takeovers(tmp_path: Path) -> None:
    """Tokens grow across runs of one job whoever holds them, and a takeover of a lost run
    gets a token above the lost holder's and above the ``lost`` write it compares."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        a, b = await new_store("a"), await new_store("b")
        tokens: list[int] = []
        for occ, store in zip(OCC[:2], (a, b), strict=True):
            cl = await store.claim(J, occ, exclusive=True)
            assert cl is not None and cl.record.fencing_token == cl.token
            held = await _lock(c)
            assert held is not None and held[1] == cl.token  # the lock's create revision
            assert (await _record(c, occ))[1] == cl.token
            tokens.append(cl.token)
            assert await store.finish(cl, status="succeeded")

        lost_claim = await a.claim(J, OCC[2], exclusive=True)
        assert lost_claim is not None
        tokens.append(lost_claim.token)
        await c.revoke(a.me.lease)  # a's session ends: its lock goes with it
        lost = await b.mark_lost(J, OCC[2], "session expired", run_id=lost_claim.record.run_id,
                                 token=lost_claim.token)
        assert lost is not None and lost.status == "lost"
        assert lost.fencing_token > lost_claim.token
        taken = await b.takeover(J, OCC[2], lost, lost.fencing_token)
        assert taken is not None and taken.record.attempt == 2
        assert taken.token > lost.fencing_token
        tokens.append(taken.token)
        assert tokens == sorted(set(tokens)), f"tokens not strictly increasing: {tokens}"
    _run(tmp_path, body)


def test_a_stale_holder_cannot_write_about_a_run_taken_over(tmp_path: Path) -> None:
    """The old holder of a run declared lost and taken over: its start, finish and hand
    back are refused, the new holder's record and lock stay as they are, and the new
    holder's own writes go on landing."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        a, b = await new_store("a"), await new_store("b")
        old = await a.claim(J, OCC[0], exclusive=True)
        assert old is not None
        await c.revoke(a.me.lease)
        lost = await b.mark_lost(J, OCC[0], "session expired", run_id=old.record.run_id,
                                 token=old.token)
        assert lost is not None
        new = await b.takeover(J, OCC[0], lost, lost.fencing_token)
        assert new is not None
        before = await _record(c, OCC[0])

        assert not await a.update(old, status="running", started_at=1.0)
        assert not await a.finish(old, status="succeeded", exit_code=0)
        assert not await a.hand_back(old)
        await a.release_lock(old)
        assert await _record(c, OCC[0]) == before, "a stale holder's write landed"
        held = await _lock(c)
        assert held is not None and held[1] == new.token and held[0].worker == "b"

        assert await b.update(new, status="running", started_at=2.0)
        assert await b.finish(new, status="succeeded", exit_code=0)
        assert (await _record(c, OCC[0]))[0].worker == "b"
        assert await _lock(c) is None
    _run(tmp_path, body)


def test_a_takeover_compares_the_lost_write_it_saw(tmp_path: Path) -> None:
    """A takeover from a stale view of the record (a revision before the ``lost`` write, or
    after another worker already took it over) is refused: one takeover per lost run."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        a, b, d = await new_store("a"), await new_store("b"), await new_store("d")
        old = await a.claim(J, OCC[0], exclusive=True)
        assert old is not None
        await c.revoke(a.me.lease)
        lost = await b.mark_lost(J, OCC[0], "gone", run_id=old.record.run_id, token=old.token)
        assert lost is not None
        assert await d.takeover(J, OCC[0], lost, old.token) is None  # saw the record before
        assert await b.takeover(J, OCC[0], lost, lost.fencing_token) is not None
        assert await d.takeover(J, OCC[0], lost, lost.fencing_token) is None  # b was first
    _run(tmp_path, body)


def test_a_fenced_write_after_another_write_by_someone_else_is_refused(
        tmp_path: Path) -> None:
    """Any write to the run record by someone else (here a ``lost`` mark while the holder
    still runs) fences the holder out: its later update and finish are refused."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        a, b = await new_store("a"), await new_store("b")
        cl = await a.claim(J, OCC[0], exclusive=True)
        assert cl is not None and await a.update(cl, status="running", started_at=1.0)
        await c.revoke(a.me.lease)
        assert await b.mark_lost(J, OCC[0], "gone", run_id=cl.record.run_id,
                                 token=None) is not None
        assert not await a.update(cl, output_tail="late")
        assert not await a.finish(cl, status="succeeded")
        rec = (await _record(c, OCC[0]))[0]
        assert rec.status == "lost" and rec.note == "gone" and rec.output_tail == ""
    _run(tmp_path, body)


# -- lease loss ---------------------------------------------------------------------------

def test_a_live_run_cannot_be_marked_lost(tmp_path: Path) -> None:
    """``mark_lost`` with the run's token refuses while that run's lock is alive, and
    refuses another run's record or one no longer active."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        a, b = await new_store("a"), await new_store("b")
        cl = await a.claim(J, OCC[0], exclusive=True)
        assert cl is not None
        run_id = cl.record.run_id
        assert await b.mark_lost(J, OCC[0], "x", run_id=run_id, token=cl.token) is None
        assert await b.mark_lost(J, OCC[0], "x", run_id="someone-else", token=None) is None
        assert (await _record(c, OCC[0]))[0].status == "claimed"
        assert await a.finish(cl, status="succeeded")
        assert await b.mark_lost(J, OCC[0], "x", run_id=run_id, token=cl.token) is None
        assert (await _record(c, OCC[0]))[0].status == "succeeded"
    _run(tmp_path, body)


def test_lease_loss_frees_the_job_and_leaves_the_run_to_be_marked_lost(
        tmp_path: Path) -> None:
    """The holder's session ends: its lock is gone with the lease (so the next occurrence
    can be claimed), its run is marked lost — noted as before it started if it had not —
    and the old holder can neither claim on the dead lease nor write about the run."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        a, b = await new_store("a"), await new_store("b")
        cl = await a.claim(J, OCC[0], exclusive=True)
        assert cl is not None
        assert cl.lease == a.me.lease and cl.record.lease == a.me.lease
        await c.revoke(a.me.lease)
        assert await _lock(c) is None
        with pytest.raises(LeaseNotFoundError):
            await a.claim(J, OCC[1], exclusive=True)
        lost = await b.mark_lost(J, OCC[0], "session expired", run_id=cl.record.run_id,
                                 token=cl.token)
        assert lost is not None and lost.note == "session expired (before it started)"
        assert not await a.update(cl, status="running", started_at=1.0)
        nxt = await b.claim(J, OCC[1], exclusive=True)
        assert nxt is not None and nxt.token > cl.token
        # the lost run's token no longer names the lock: marking it lost again is refused
        assert await b.mark_lost(J, OCC[0], "x", run_id=cl.record.run_id,
                                 token=cl.token) is None
    _run(tmp_path, body)


def test_mark_lost_spares_a_later_run_holding_the_lock(tmp_path: Path) -> None:
    """With ``allow``, run 1 is marked lost on its own token even though the lock is now
    held by run 2 of the same job (another lease): the check is on *this* run's lock."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        a, b = await new_store("a"), await new_store("b")
        one = await a.claim(J, OCC[0], exclusive=False)
        assert one is not None and one.holds_lock
        await c.revoke(a.me.lease)
        two = await b.claim(J, OCC[1], exclusive=False)
        assert two is not None and two.holds_lock
        assert await b.mark_lost(J, OCC[0], "gone", run_id=one.record.run_id,
                                 token=one.token) is not None
        assert await b.mark_lost(J, OCC[1], "gone", run_id=two.record.run_id,
                                 token=two.token) is None
        held = await _lock(c)
        assert held is not None and held[1] == two.token
    _run(tmp_path, body)


# -- adopt and hand back --------------------------------------------------------------------

def test_adopt_recognises_only_our_own_unanswered_claim(tmp_path: Path) -> None:
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        a, b = await new_store("a"), await new_store("b")
        cl = await a.claim(J, OCC[0], exclusive=True)
        assert cl is not None
        rec, kv = await a.get_run_kv(J, OCC[0])
        assert rec is not None and kv is not None
        adopted = a.adopt(rec, kv, exclusive=True)
        assert adopted is not None and adopted.token == cl.token
        assert b.adopt(rec, kv, exclusive=True) is None
        a.forget(J, OCC[0])
        assert a.adopt(rec, kv, exclusive=True) is None
    _run(tmp_path, body)


def test_an_adopted_claim_keeps_the_lease_it_was_made_on(tmp_path: Path) -> None:
    """A worker's next session (a new store, its attempts carried over) adopting a claim
    its lost session made: the claim lives on the old lease (so does its lock), and the
    start's session check must see that (schedsim seed 545205, F17)."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        old = await new_store("a")
        cl = await old.claim(J, OCC[0], exclusive=True)
        assert cl is not None and cl.lease == old.me.lease
        new = await new_store("a")
        new.attempted = old.attempted
        rec, kv = await new.get_run_kv(J, OCC[0])
        assert rec is not None and kv is not None
        adopted = new.adopt(rec, kv, exclusive=True)
        assert adopted is not None and adopted.lease == old.me.lease != new.me.lease
    _run(tmp_path, body)


def test_hand_back_undoes_an_unstarted_claim_only(tmp_path: Path) -> None:
    """A claim handed back frees the occurrence and the job for anyone; one that was
    written since (started) is not handed back and keeps its lock."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        a, b = await new_store("a"), await new_store("b")
        cl = await a.claim(J, OCC[0], exclusive=True)
        assert cl is not None
        assert await a.hand_back(cl)
        assert await c.get_one(keys.run_key(J, OCC[0])) is None and await _lock(c) is None
        again: Claim | None = await b.claim(J, OCC[0], exclusive=True)
        assert again is not None
        assert await b.update(again, status="running", started_at=1.0)
        stale = Claim(J, OCC[0], again.token, again.token, again.record, True)
        assert not await b.hand_back(stale)
        assert (await _record(c, OCC[0]))[0].status == "running"
        held = await _lock(c)
        assert held is not None and held[1] == again.token
    _run(tmp_path, body)


# -- suspension ------------------------------------------------------------------------

@pytest.mark.parametrize("exclusive", [True, False])
def test_a_claim_is_refused_while_the_job_is_suspended(tmp_path: Path, exclusive: bool) -> None:
    """The claim txn requires ``/cron/suspend/<job>`` absent: a worker whose suspensions
    view is stale (it was cut off while the job was suspended) cannot start the job. The
    refusal writes nothing, and once the job is resumed the occurrence is claimed."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        a = await new_store("a")
        assert await suspension.suspend(c, J, "maintenance")
        assert await a.claim(J, OCC[0], exclusive=exclusive) is None
        assert await c.get_one(keys.run_key(J, OCC[0])) is None, "a refused claim wrote"
        assert await _lock(c) is None
        assert await suspension.resume(c, J)
        claim = await a.claim(J, OCC[0], exclusive=exclusive)
        assert claim is not None and claim.holds_lock
    _run(tmp_path, body)
