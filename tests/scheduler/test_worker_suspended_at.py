"""``Shared.suspended_at``: whether a worker's view shows a job suspended at a past instant.
A claim whose answer comes back after its instant asks it (schedsim seed 510512: a
``forbid`` occurrence claimed just before ``jobs suspend``, its answer seconds late, started
after the resume although it fell due while the job was suspended)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from scheduler.suspension import Suspension
from scheduler.worker.config import WorkerConfig
from scheduler.worker.state import Shared

T0 = datetime(2027, 1, 15, 8, 0, 30, tzinfo=UTC)


def shared() -> Shared:
    return Shared(WorkerConfig(name="w1", endpoints=["127.0.0.1:1"]), cast(Any, None))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(("since", "instant", "expected"), [
    (-1.0, 0.0, True),     # suspended before the instant and still
    (0.0, 0.0, True),
    (1.0, 0.0, False),     # suspended after it: the occurrence was due before
])
def test_a_current_suspension(since: float, instant: float, expected: bool) -> None:
    s = shared()
    s.suspended["j"] = Suspension(by="u@h", at=at(since).timestamp())
    assert s.suspended_at("j", at(instant)) is expected
    assert s.suspended_at("other", at(instant)) is False


@pytest.mark.parametrize(("since", "until", "instant", "expected"), [
    (-1.0, 4.0, 0.0, True),    # the case of seed 510512: resumed before the late answer
    (-1.0, 0.0, 0.0, False),   # resumed at the instant: it was due after the resume
    (-3.0, -1.0, 0.0, False),  # suspended and resumed before the instant
    (1.0, 4.0, 0.0, False),    # suspended after the instant
])
def test_the_last_suspension_seen_to_end(since: float, until: float, instant: float,
                                         expected: bool) -> None:
    s = shared()
    s.suspension_ends["j"] = (at(since).timestamp(), at(until).timestamp())
    assert s.suspended_at("j", at(instant)) is expected


def test_nothing_seen_is_not_suspended() -> None:
    assert shared().suspended_at("j", at(0)) is False
