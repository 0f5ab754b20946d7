"""The dashboard's session table, login limiter and CSRF token on a virtual clock (the
process tests cannot wait 30 minutes for an idle session to end)."""

from __future__ import annotations

from scheduler.dashboard.guard import loopback_host
from scheduler.dashboard.login import safe_next
from scheduler.dashboard.session import (
    IDLE_SECONDS,
    LIFETIME_SECONDS,
    RECHECK_SECONDS,
    LoginLimiter,
    SessionStore,
    csrf_ok,
    csrf_token,
    new_id,
    plausible_id,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_end_when_idle_at_their_lifetime_and_when_too_many() -> None:
    clock = Clock()
    store = SessionStore(clock, max_sessions=3)
    idle = store.create("a", "client-a")
    assert store.get(idle.id) is idle
    clock.now += IDLE_SECONDS + 1
    assert store.get(idle.id) is None
    assert store.take_closing() == ["client-a"]  # its client is closed by the caller

    busy = store.create("b", "client-b")
    while clock.now < busy.created + LIFETIME_SECONDS - IDLE_SECONDS / 2:
        clock.now += IDLE_SECONDS / 2
        assert store.get(busy.id) is busy  # in use: kept, until its lifetime
    clock.now += IDLE_SECONDS
    assert store.get(busy.id) is None

    first, second, third = (store.create(u, f"client-{u}") for u in "cde")
    store.get(first.id)  # used: the least recently used is now `second`
    fourth = store.create("f", "client-f")
    assert store.get(second.id) is None
    assert {s.user for s in (first, third, fourth) if store.get(s.id)} == {"c", "e", "f"}
    assert "client-d" in store.take_closing()
    assert sorted(store.drop_all()) == ["client-c", "client-e", "client-f"]
    assert len(store) == 0


def test_recheck_is_due_after_its_interval() -> None:
    clock = Clock()
    store = SessionStore(clock)
    session = store.create("a", None)
    assert not store.due_recheck(session)
    clock.now += RECHECK_SECONDS + 0.1
    assert store.due_recheck(session)
    store.rechecked(session)
    assert not store.due_recheck(session)


def test_limiter_burst_refill_refund_and_addresses_apart() -> None:
    clock = Clock()
    limiter = LoginLimiter(burst=3, rate=0.5, clock=clock)
    assert [limiter.allow("10.0.0.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.allow("10.0.0.1")
    assert wait == 2.0  # one token at 0.5/s
    assert limiter.allow("10.0.0.2") == 0.0  # another address has its own bucket
    clock.now += 2.0
    assert limiter.allow("10.0.0.1") == 0.0
    assert limiter.allow("10.0.0.1") > 0
    limiter.refund("10.0.0.1")  # a successful login gives its token back
    assert limiter.allow("10.0.0.1") == 0.0
    clock.now += 3600
    assert [limiter.allow("10.0.0.1") for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # capped


def test_csrf_tokens_are_bound_to_the_id_and_the_process_secret() -> None:
    sid, other = new_id(), new_id()
    assert plausible_id(sid) and not plausible_id("x") and not plausible_id(None)
    assert not plausible_id(sid[:-1] + ";")
    token = csrf_token(b"secret", sid)
    assert csrf_ok(b"secret", sid, token)
    assert not csrf_ok(b"secret", other, token)
    assert not csrf_ok(b"another process", sid, token)
    assert not csrf_ok(b"secret", sid, None) and not csrf_ok(b"secret", sid, "")


def test_loopback_host_names_and_safe_redirects() -> None:
    for ok in ("127.0.0.1:8080", "localhost:1", "[::1]:8080", "LOCALHOST", "127.1.2.3"):
        assert loopback_host(ok), ok
    for bad in ("evil.example:8080", "192.0.2.2:8080", "[::]:80", "localhost.evil.example",
                "0.0.0.0:8080", ""):
        assert not loopback_host(bad), bad
    assert safe_next("/jobs/x?q=1") == "/jobs/x?q=1"
    for bad in ("//evil.example", "/\\evil.example", "https://evil.example", "", None,
                "/x\r\nSet-Cookie: a=b"):
        assert safe_next(bad) == "/", bad
