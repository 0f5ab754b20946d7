"""Lessor unit tests and a hypothesis state machine against a naive model."""

from __future__ import annotations

import math

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from coord.errors import LeaseExists, LeaseNotFound, LeaseTTLTooLarge, NotLeader
from coord.lease.lessor import MAX_TTL, MIN_TTL, Lessor


def test_grant_rules() -> None:
    le = Lessor()
    assert le.grant(1, 1, 0.0).ttl == MIN_TTL == 2
    assert le.grant(2, 0, 0.0).ttl == 2
    assert le.grant(3, -5, 0.0).ttl == 2
    assert le.grant(-7, 30, 0.0).ttl == 30
    assert le.grant(4, MAX_TTL, 0.0).ttl == MAX_TTL
    with pytest.raises(LeaseExists, match="lease already exists"):
        le.grant(1, 10, 0.0)
    with pytest.raises(LeaseTTLTooLarge, match="too large lease TTL"):
        le.grant(1, MAX_TTL + 1, 0.0)  # checked before existence
    with pytest.raises(LeaseNotFound):
        le.grant(0, 10, 0.0)
    assert le.leases() == [1, 2, 3, -7, 4]


def test_revoke_returns_sorted_keys() -> None:
    le = Lessor()
    le.grant(5, 10, 0.0)
    for k in (b"z", b"a", b"m"):
        le.attach(5, k)
    le.detach(5, b"m")
    le.detach(5, b"never")
    le.attach(99, b"ignored")
    assert le.revoke(5) == [b"a", b"z"]
    with pytest.raises(LeaseNotFound, match="requested lease not found"):
        le.revoke(5)
    with pytest.raises(LeaseNotFound):
        le.revoke(0)


def test_time_to_live_and_renew_on_primary() -> None:
    le = Lessor()
    le.promote(100.0)
    le.grant(1, 30, 100.0)
    le.attach(1, b"k")
    assert le.time_to_live(1, 100.5) == (29, 30, [b"k"])
    assert le.time_to_live(2, 100.5) == (-1, 0, [])
    assert le.renew(1, 120.0) == 30
    assert le.time_to_live(1, 149.0) == (1, 30, [b"k"])
    assert le.expired(149.9) == []
    assert le.expired(150.0) == [1]
    assert le.time_to_live(1, 150.0) == (-1, 0, [])
    assert le.renew(1, 150.0) == 0  # expired, awaiting revoke
    assert le.renew(9, 150.0) == 0
    assert 1 in le  # expiry itself never mutates


def test_non_primary_never_expires_and_cannot_renew() -> None:
    le = Lessor()
    le.grant(1, 5, 0.0)
    assert le.expired(1e12) == []
    assert le.time_to_live(1, 1e9) == (5, 5, [])
    with pytest.raises(NotLeader):
        le.renew(1, 0.0)


def test_promote_extends_every_lease_and_demote_stops() -> None:
    le = Lessor()
    le.promote(0.0)
    le.grant(1, 5, 0.0)
    le.grant(2, 10, 0.0)
    le.demote()
    assert le.expired(100.0) == []
    le.promote(100.0)
    assert le.expired(104.9) == []
    assert le.expired(105.0) == [1]
    assert le.expired(200.0, limit=1) == [1]
    assert le.expired(200.0) == [1, 2]


def test_expired_order_is_deadline_then_id() -> None:
    le = Lessor()
    le.promote(0.0)
    le.grant(9, 5, 0.0)
    le.grant(3, 5, 0.0)
    le.grant(4, 2, 0.0)
    assert le.expired(10.0) == [4, 3, 9]


def test_snapshot_roundtrip() -> None:
    le = Lessor()
    le.grant(5, 10, 0.0)
    le.grant(-2, 60, 0.0)
    le.attach(5, b"k")
    data = le.snapshot()
    other = Lessor()
    other.promote(50.0)
    other.restore(data, 50.0)
    assert other.leases() == [5, -2]
    assert other.time_to_live(5, 51.0) == (9, 10, [])
    assert other.snapshot() == data
    with pytest.raises(ValueError, match="lessor"):
        other.restore(b"nope", 0.0)


class LessorModel(RuleBasedStateMachine):
    """The lessor against a dict of id -> (ttl, deadline, keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.le = Lessor()
        self.model: dict[int, list[object]] = {}
        self.order: list[int] = []
        self.primary = False
        self.now = 0.0

    ids = st.integers(min_value=-3, max_value=6)

    @rule(dt=st.floats(min_value=0, max_value=20))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule(lid=ids, ttl=st.integers(min_value=-5, max_value=40))
    def grant(self, lid: int, ttl: int) -> None:
        if lid == 0:
            with pytest.raises(LeaseNotFound):
                self.le.grant(lid, ttl, self.now)
            return
        if lid in self.model:
            with pytest.raises(LeaseExists):
                self.le.grant(lid, ttl, self.now)
            return
        got = self.le.grant(lid, ttl, self.now)
        ttl = max(ttl, 2)
        assert got.ttl == ttl
        self.model[lid] = [ttl, self.now + ttl if self.primary else math.inf, set()]
        self.order.append(lid)

    @rule(lid=ids)
    def revoke(self, lid: int) -> None:
        if lid not in self.model:
            with pytest.raises(LeaseNotFound):
                self.le.revoke(lid)
            return
        keys = self.model.pop(lid)[2]
        self.order.remove(lid)
        assert self.le.revoke(lid) == sorted(keys)  # type: ignore[call-overload]

    @rule(lid=ids, key=st.sampled_from([b"a", b"b", b"c"]))
    def attach(self, lid: int, key: bytes) -> None:
        self.le.attach(lid, key)
        if lid in self.model:
            self.model[lid][2].add(key)  # type: ignore[attr-defined]

    @rule(lid=ids, key=st.sampled_from([b"a", b"b", b"c"]))
    def detach(self, lid: int, key: bytes) -> None:
        self.le.detach(lid, key)
        if lid in self.model:
            self.model[lid][2].discard(key)  # type: ignore[attr-defined]

    @precondition(lambda self: self.primary)
    @rule(lid=ids)
    def renew(self, lid: int) -> None:
        got = self.le.renew(lid, self.now)
        m = self.model.get(lid)
        if m is None or m[1] <= self.now:  # type: ignore[operator]
            assert got == 0
        else:
            assert got == m[0]
            m[1] = self.now + m[0]  # type: ignore[operator]

    @rule()
    def promote(self) -> None:
        self.primary = True
        self.le.promote(self.now)
        for m in self.model.values():
            m[1] = self.now + m[0]  # type: ignore[operator]

    @rule()
    def demote(self) -> None:
        self.primary = False
        self.le.demote()
        for m in self.model.values():
            m[1] = math.inf

    @rule()
    def snapshot_restore(self) -> None:
        other = Lessor()
        if self.primary:
            other.promote(self.now)
        other.restore(self.le.snapshot(), self.now)
        assert other.leases() == self.order
        assert other.snapshot() == self.le.snapshot()

    @invariant()
    def matches(self) -> None:
        assert self.le.leases() == self.order
        want = sorted(
            (m[1], lid) for lid, m in self.model.items() if m[1] <= self.now  # type: ignore[operator]
        )
        assert self.le.expired(self.now) == ([lid for _, lid in want] if self.primary else [])
        for lid, (ttl, deadline, keys) in self.model.items():
            left = deadline - self.now  # type: ignore[operator]
            got = self.le.time_to_live(lid, self.now)
            if left <= 0:
                assert got == (-1, 0, [])
            else:
                exp = ttl if left == math.inf else int(left)
                assert got == (exp, ttl, sorted(keys))  # type: ignore[call-overload]


TestLessorModel = LessorModel.TestCase
TestLessorModel.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
