"""Hostile review (issue 19): one user cannot push everyone else out of the dashboard.

Sessions are kept up to MAX_SESSIONS, least recently used first out. Any user the store
accepts — a viewer — could log in that many times (a successful login refunds the login
limiter) and so end every other user's session, an admin's included. Each user now has
at most MAX_PER_USER sessions: its own oldest goes first, nobody else's."""

from __future__ import annotations

from scheduler.dashboard import session as sessions
from scheduler.dashboard.session import SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_user_cannot_evict_the_others() -> None:
    clock = Clock()
    store = SessionStore(clock, max_sessions=40)
    admin = store.create("adm", "adm-client")
    for i in range(200):  # a viewer logging in again and again
        clock.now += 1
        store.create("view", f"view-client-{i}")
    assert store.get(admin.id) is not None, "the admin's session was pushed out"
    assert len(store) <= 1 + sessions.MAX_PER_USER
    closing = store.take_closing()
    assert "adm-client" not in closing
    assert len(closing) == 200 - sessions.MAX_PER_USER  # each dropped client is closed


def test_per_user_cap_drops_that_users_oldest() -> None:
    clock = Clock()
    store = SessionStore(clock)
    first = [store.create("view", f"c{i}") for i in range(sessions.MAX_PER_USER)]
    clock.now += 1
    store.get(first[0].id)  # used just now: still the oldest login of the user
    newest = store.create("view", "c-new")
    assert store.get(newest.id) is not None
    live = [s for s in first if store.get(s.id) is not None]
    assert len(live) == sessions.MAX_PER_USER - 1
    assert store.take_closing() != []
