"""Schedsim seed 12021 (issue 20): an occurrence missed while every worker was down, left
unrecorded when the worker that deferred its ``missed`` record died before writing it.

Both workers were down at ``job0@…22.166Z`` (``allow``, every 2 s); w1 restarted at 24.47,
ran 24.166 and deferred 22.166's record to 29.166 (``decide.missed_settle``), then crashed
at 26.35. w0 (restart 26.21) and w1 (restart 28.19) caught up from the newest record,
26.166: nothing older was looked at. A restart now also finds the holes before it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler.claim import RunRecord
from scheduler.plan import MANUAL_SUFFIX, Timetable, occurrence_id
from scheduler.worker.restart import HOLES_MAX, Restart, restart_point, resumed_from, started_from

T0 = datetime(2027, 1, 15, 8, 0, 0, tzinfo=UTC)  # seed 12021: .166 (the spread)
EVERY2 = Timetable.parse("@every 2s")


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def rec(s: float, revision: int = 7, status: str = "succeeded", suffix: str = "") -> RunRecord:
    return RunRecord(job="job0", occurrence=occurrence_id(at(s)) + suffix, status=status,
                     spec_revision=revision)


def test_seed_12021_the_hole_is_found() -> None:
    records = [rec(s) for s in (16, 18, 20)] + [rec(24), rec(26, status="claimed")]
    r = restart_point(records, 7, EVERY2, now=at(26.05), starting_deadline=60)
    assert r.since == at(26)
    assert r.holes == (at(22),)


def test_no_holes_on_a_full_timeline() -> None:
    records = [rec(s) for s in range(0, 28, 2)]
    r = restart_point(records, 7, EVERY2, now=at(27), starting_deadline=60)
    assert r.since == at(26) and r.holes == ()


def test_holes_older_than_the_starting_deadline_are_left() -> None:
    records = [rec(0), rec(20)]  # 2..18 missing; the deadline reaches back to 9
    r = restart_point(records, 7, EVERY2, now=at(21), starting_deadline=12)
    assert r.holes == tuple(at(s) for s in (10, 12, 14, 16, 18))


def test_nothing_before_the_current_spec_revision() -> None:
    """An edit restarts the timeline: the gap between the old spec's records and the
    new one's is no hole (and a last record of an older revision means no catch-up)."""
    records = [rec(0, revision=3), rec(10, revision=7), rec(12, revision=7)]
    r = restart_point(records, 7, EVERY2, now=at(13), starting_deadline=60)
    assert r.since == at(12) and r.holes == ()
    assert restart_point(records, 8, EVERY2, now=at(13), starting_deadline=60).since is None


def test_manual_and_revisionless_records_account_but_do_not_place() -> None:
    records = [rec(0), rec(2, revision=0, status="missed"), rec(4),
               rec(5, suffix=MANUAL_SUFFIX + "-5")]
    r = restart_point(records, 7, EVERY2, now=at(5), starting_deadline=60)
    assert r.since == at(4) and r.holes == ()


def test_holes_are_bounded() -> None:
    tt = Timetable.parse("@every 1s")
    records = [rec(0), rec(3000)]
    r = restart_point(records, 7, tt, now=at(3000), starting_deadline=3600)
    assert len(r.holes) == HOLES_MAX and r.holes[-1] == at(2999)


def test_no_records() -> None:
    assert restart_point([], 7, EVERY2, now=at(5), starting_deadline=60).since is None


# ---------------------------------------------------------------- a resume seen late
def test_a_resume_seen_late_catches_up_from_the_last_record() -> None:
    """Seed 31785's other half: job2 resumed at 17.1 while w1 was cut off (until 21.9) and
    w0 down from 20.39; w1 saw the resume at 22.1 and fired from then: 21.5 was nobody's.
    From the last record (19.5, claimed after the resume) the catch-up runs 21.5."""
    restart = Restart(at(19), (at(15),))
    r = resumed_from(restart, seen_at=at(22.1), suspended_at=at(9.4))
    assert r == restart


def test_a_resume_with_nothing_recorded_since_the_suspension_fires_from_now() -> None:
    """The last record is older than the suspension: nothing fell due during it, or the key
    was deleted by hand (no skipped record) — not replayed: from when the worker saw it."""
    restart = Restart(at(8), ())
    assert resumed_from(restart, seen_at=at(22.1), suspended_at=at(9.4)).since == at(22.1)
    assert resumed_from(Restart(None), seen_at=at(22.1), suspended_at=None).since == at(22.1)
    assert resumed_from(restart, seen_at=at(22.1), suspended_at=None).since == at(8)


# ---------------------------------------------------------------- a record ahead of the start
def test_a_start_behind_the_newest_record_fires_from_its_own_now() -> None:
    """A full run (issue 20, session 12): three workers started at once, clocks -2, 0 and
    +2 s, a job every second. The +2 s worker claimed 04:09:02 at 04:08:59.9 (real) before
    the others read the job's records; they started the job's timeline after that record,
    and the +2 s worker's own timer began at 04:09:02: 04:09:00 and :01 were nobody's,
    never run and never recorded. A start never begins after its own now."""
    records = [rec(2, status="claimed")]
    restart = restart_point(records, 7, EVERY2, now=at(-0.1), starting_deadline=60)
    assert restart.since == at(2)
    assert started_from(restart, seen_at=at(-0.1)) == Restart(at(-0.1), ())


def test_a_start_keeps_the_holes_before_its_own_now() -> None:
    restart = Restart(at(30), (at(20), at(24), at(28)))
    assert started_from(restart, seen_at=at(25)) == Restart(at(25), (at(20), at(24)))


def test_a_start_after_the_newest_record_is_a_restart_as_before() -> None:
    restart = Restart(at(26), (at(22),))
    assert started_from(restart, seen_at=at(26.05)) == restart
    assert started_from(Restart(None), seen_at=at(26.05)) == Restart(None)
