"""The order of a ``forbid``/``replace`` job's occurrences, decided by the store.

Issue 20, findings F6 and the claim race after a store outage (tests/schedsim/FINDINGS.md):
a claim of occurrence N requires N+1 unrecorded (an occurrence never starts after a later
one was claimed or settled, whatever the claimant's views show: seeds 1970 and 4798 started
one after the next had run), and N+1's claim requires N recorded when the claimant's timer
fired N (the older of two pending claims wins). Both are compares in the claim's one txn.

The pure decisions (``decide.claim_order``, ``decide.next_in_order``) are checked table by
table; the txns against a real in-process coord member, as ``test_claim.py`` does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from coord.client import Client
from scheduler import keys
from scheduler.claim import ClaimStore, RunRecord
from scheduler.plan import MANUAL_SUFFIX, Timetable, occurrence_id
from scheduler.worker import decide
from tests.scheduler.test_claim import _run

J = "job"
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def occ(minutes: int) -> str:
    return occurrence_id(T0 + timedelta(minutes=minutes))


MANUAL = f"{occ(0)}{MANUAL_SUFFIX}ab12"


# ------------------------------------------------------------------ the pure decisions
@pytest.mark.parametrize(("concurrency", "occurrence", "around", "expected"), [
    # ordered: the previous must be recorded, the next must not
    ("forbid", occ(1), decide.Neighbours(occ(0), occ(2)), (occ(0), occ(2))),
    ("replace", occ(1), decide.Neighbours(occ(0), occ(2)), (occ(0), occ(2))),
    # the first occurrence a timer fires (after a start, resume, edit): no previous
    ("forbid", occ(1), decide.Neighbours(None, occ(2)), (None, occ(2))),
    # a schedule that never fires again: no next
    ("forbid", occ(1), decide.Neighbours(occ(0), None), (occ(0), None)),
    # allow runs side by side, in any order; a manual run is nobody's neighbour
    ("allow", occ(1), decide.Neighbours(occ(0), occ(2)), (None, None)),
    ("forbid", MANUAL, decide.Neighbours(occ(0), occ(2)), (None, None)),
    ("replace", MANUAL, decide.Neighbours(occ(0), occ(2)), (None, None)),
    ("forbid", occ(1), decide.ALONE, (None, None)),
])
def test_claim_order(concurrency: str, occurrence: str, around: decide.Neighbours,
                     expected: tuple[str | None, str | None]) -> None:
    assert decide.claim_order(concurrency, occurrence, around) == expected


def test_next_in_order_is_the_next_fire_instant_of_an_ordered_occurrence() -> None:
    every = Timetable.parse("@every 60s")
    cron = Timetable.parse("*/5 * * * *", "Europe/Berlin")
    assert decide.next_in_order("forbid", occ(1), every) == occ(2)
    assert decide.next_in_order("replace", occ(5), cron) == occ(10)
    assert decide.next_in_order("allow", occ(5), cron) is None
    assert decide.next_in_order("forbid", MANUAL, cron) is None
    assert decide.next_in_order("forbid", "not-an-id", cron) is None


def test_the_overtaken_note_is_the_one_busy_note_gives_for_a_later_holder() -> None:
    assert decide.overtaken_note(occ(2)) == decide.busy_note(occ(1), occ(2)) == (
        f"a later occurrence {occ(2)} was claimed first")


# ------------------------------------------------------------------ the txns
async def _status(c: Client, o: str) -> str | None:
    kv = await c.get_one(keys.run_key(J, o))
    return None if kv is None else RunRecord.decode(kv.value).status


def test_a_claim_is_refused_once_the_next_occurrence_has_a_record(tmp_path: Path) -> None:
    """F6: the claim of N, retried through a cut or caught up after a restart, lands only
    while N+1 has no record; a refusal writes nothing."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        a, b = await new_store("a"), await new_store("b")
        later = await b.claim(J, occ(2), exclusive=True)
        assert later is not None
        assert await b.finish(later, status="succeeded")
        assert await a.claim(J, occ(1), exclusive=True, unrecorded=occ(2)) is None
        assert await _status(c, occ(1)) is None, "a refused claim wrote"
        assert await c.get_one(keys.lock_key(J)) is None
        # a skipped or missed record of N+1 settles it as well
        assert await b.record_missed(J, occ(4), status="skipped", note="x")
        assert await a.claim(J, occ(3), exclusive=True, unrecorded=occ(4)) is None
        # without a later record the same claim lands
        assert await a.claim(J, occ(5), exclusive=True, unrecorded=occ(6)) is not None
    _run(tmp_path, body)


def test_a_claim_waits_for_the_previous_occurrence_to_be_recorded(tmp_path: Path) -> None:
    """The claim race after an outage: N+1's claim is refused while N, which its timer
    fired too, has no record; once N is claimed (or recorded) it is decided by the lock
    as before."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        a, b = await new_store("a"), await new_store("b")
        assert await b.claim(J, occ(2), exclusive=True, recorded=occ(1),
                             unrecorded=occ(3)) is None
        assert await _status(c, occ(2)) is None and await c.get_one(keys.lock_key(J)) is None
        older = await a.claim(J, occ(1), exclusive=True, recorded=occ(0), unrecorded=None)
        assert older is None, "N-1 has no record either"
        older = await a.claim(J, occ(1), exclusive=True, unrecorded=occ(2))
        assert older is not None, "the older pending claim wins"
        # N+1 is now refused by the lock (forbid skips it, replace kills N first)
        assert await b.claim(J, occ(2), exclusive=True, recorded=occ(1),
                             unrecorded=occ(3)) is None
        assert await a.finish(older, status="succeeded")
        newer = await b.claim(J, occ(2), exclusive=True, recorded=occ(1), unrecorded=occ(3))
        assert newer is not None
    _run(tmp_path, body)


def test_a_rerun_is_refused_once_the_next_occurrence_has_a_record(tmp_path: Path) -> None:
    """Seed 4798: an ``on_lost: rerun`` takeover of N, lost before it started, must not
    start N after N+1 ran."""
    async def body(c: Client, new_store: Callable[[str], Awaitable[ClaimStore]]) -> None:
        a, b = await new_store("a"), await new_store("b")
        first = await a.claim(J, occ(1), exclusive=True)
        assert first is not None
        await c.revoke(a.me.lease)  # a dies before starting it: its lock goes
        lost = await b.mark_lost(J, occ(1), "worker died", run_id=first.record.run_id,
                                 token=None)
        assert lost is not None
        nxt = await b.claim(J, occ(2), exclusive=True)
        assert nxt is not None
        assert await b.finish(nxt, status="succeeded")
        assert await b.takeover(J, occ(1), lost, lost.fencing_token,
                                unrecorded=occ(2)) is None
        assert await _status(c, occ(1)) == "lost"
        # before N+1 had a record, the same takeover landed (the rerun path itself)
        first = await b.claim(J, occ(3), exclusive=True)
        assert first is not None
        c2 = await new_store("c")
        await c.revoke(b.me.lease)
        lost = await c2.mark_lost(J, occ(3), "worker died", run_id=first.record.run_id,
                                  token=None)
        assert lost is not None
        assert await c2.takeover(J, occ(3), lost, lost.fencing_token,
                                 unrecorded=occ(4)) is not None
    _run(tmp_path, body)


# ------------------------------------------------------------------ young missed records
@pytest.mark.parametrize(("due_ago", "deadline", "ttl", "expected"), [
    (0.0, 60, 3, 7.0),     # two TTLs after the instant, and a second
    (5.0, 60, 3, 2.0),     # part of it has passed already
    (10.0, 60, 3, 0.0),    # all of it: at once
    (0.0, 4, 3, 5.0),      # a starting deadline shorter than two TTLs bounds it
    (0.0, 60, 10, 21.0),   # the agent's default TTL (10 s)
])
def test_missed_settle(due_ago: float, deadline: float, ttl: float, expected: float) -> None:
    """Accounting gaps 2452, 6394: a restarted worker records the catch-up's young missed
    occurrences once no live worker can still be claiming them, not a whole starting
    deadline later (61 s: past the end of a simulated run, and never if it died first)."""
    now = T0 + timedelta(seconds=100)
    instant = now - timedelta(seconds=due_ago)
    assert decide.missed_settle(instant, now, deadline, ttl) == pytest.approx(expected)
