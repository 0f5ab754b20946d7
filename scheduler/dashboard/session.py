"""The dashboard's sessions: who is logged in, with which store identity, and the
per-session CSRF token (docs/dashboard-security.md).

A session is created only by a login the store accepted (``Authenticate`` with the user's
name and password). It holds that user's own store client — the credentials stay in this
process, in the client's token source, and are never sent to the browser — so every action
runs as the user and the store enforces the same roles as for the CLI. The browser holds a
random session id in an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` over TLS).

The CSRF token is an HMAC of the cookie's id under a secret of this process, so it needs no
table: a store without auth has no sessions, yet every browser still gets an id cookie and a
token bound to it, and a state-changing request must present both.

Sessions end after :data:`IDLE_SECONDS` without a request, :data:`LIFETIME_SECONDS` after
login, at logout, and when the process stops; at most :data:`MAX_SESSIONS` are kept (the
least recently used one goes first), at most :data:`MAX_PER_USER` of one user (that user's
oldest login goes first).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

COOKIE = "raftcron_session"
"""The cookie holding the session id (or, without store auth, the CSRF binding id)."""
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
"""The form field a plain HTML form sends the token in (a form cannot set headers)."""
IDLE_SECONDS = 30 * 60.0
LIFETIME_SECONDS = 12 * 3600.0
MAX_SESSIONS = 1000
MAX_PER_USER = 20
"""Sessions one user may hold; a further login ends that user's oldest, so no user can
push the others out of the :data:`MAX_SESSIONS` by logging in again and again."""
RECHECK_SECONDS = 15.0
"""How often a session's store identity is asked again whether it may still read
raftcron's keys (a revoked role ends the session within this)."""

_ID_BYTES = 32


def new_id() -> str:
    """A random session (or binding) id: 256 bits, URL-safe."""
    return secrets.token_urlsafe(_ID_BYTES)


def plausible_id(value: str | None) -> bool:
    """Whether a cookie value has the shape of an id this module makes (anything else is
    ignored and replaced, never looked up)."""
    return value is not None and 40 <= len(value) <= 64 and all(
        c.isalnum() or c in "-_" for c in value)


def csrf_token(secret: bytes, sid: str) -> str:
    """The CSRF token bound to the id ``sid``."""
    return hmac.new(secret, b"csrf:" + sid.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: bytes, sid: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(csrf_token(secret, sid), presented)


@dataclass
class Session:
    """One logged-in user."""

    id: str
    user: str
    client: Any = field(repr=False)
    """The user's own store client (coord.client.Client with the user's credentials)."""
    created: float
    last_seen: float
    checked: float
    """When the store last confirmed this user may read raftcron's keys."""


class SessionStore:
    """The sessions of one dashboard process, by id; ``clock`` is monotonic seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 max_sessions: int = MAX_SESSIONS, max_per_user: int = MAX_PER_USER) -> None:
        self._clock = clock
        self._max = max_sessions
        self._per_user = max_per_user
        self._by_id: OrderedDict[str, Session] = OrderedDict()
        self._closing: list[Any] = []

    def __len__(self) -> int:
        return len(self._by_id)

    def create(self, user: str, client: Any) -> Session:
        now = self._clock()
        session = Session(new_id(), user, client, now, now, now)
        mine = [s for s in self._by_id.values() if s.user == user]
        if len(mine) >= self._per_user:
            for old in sorted(mine, key=lambda s: s.created)[:len(mine) - self._per_user + 1]:
                self.drop(old.id)
        self._by_id[session.id] = session
        while len(self._by_id) > self._max:
            _, oldest = self._by_id.popitem(last=False)
            self._closing.append(oldest.client)
        return session

    def get(self, sid: str | None) -> Session | None:
        """The live session ``sid`` (touched), or None; an expired one is dropped."""
        session = None if sid is None else self._live(sid)
        if session is not None:
            session.last_seen = self._clock()
            self._by_id.move_to_end(session.id)
        return session

    def alive(self, sid: str) -> bool:
        """Whether ``sid`` is still a live session, without touching it (an open event
        stream asks: it is no request, so it does not keep the session from idling out)."""
        return self._live(sid) is not None

    def _live(self, sid: str) -> Session | None:
        """The session ``sid`` unless it is unknown or expired (idle or too old: dropped)."""
        session = self._by_id.get(sid)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > IDLE_SECONDS or now - session.created > LIFETIME_SECONDS:
            self.drop(sid)
            return None
        return session

    def drop(self, sid: str) -> None:
        session = self._by_id.pop(sid, None)
        if session is not None:
            self._closing.append(session.client)

    def due_recheck(self, session: Session) -> bool:
        return self._clock() - session.checked > RECHECK_SECONDS

    def rechecked(self, session: Session) -> None:
        session.checked = self._clock()

    def take_closing(self) -> list[Any]:
        """The clients of dropped sessions, for the caller to close (an async step)."""
        out, self._closing = self._closing, []
        return out

    def drop_all(self) -> list[Any]:
        """End every session; their clients to close."""
        for sid in list(self._by_id):
            self.drop(sid)
        return self.take_closing()


class LoginLimiter:
    """Failed login attempts per client address: a token bucket of :attr:`burst` attempts
    that refills at :attr:`rate` per second (12 a minute). Each attempt costs the store a
    bcrypt check, and a password guesser must not get more than a few guesses a minute.
    An attempt takes its token before it is checked (so a burst of concurrent guesses is
    bounded too) and gives it back when the login succeeds: users behind one address (a
    proxy) are not locked out by each other's logins, only by failures."""

    def __init__(self, burst: float = 10.0, rate: float = 0.2,
                 clock: Callable[[], float] = time.monotonic, max_tracked: int = 10_000) -> None:
        self.burst = burst
        self.rate = rate
        self._clock = clock
        self._max = max_tracked
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, address: str) -> float:
        """0 if an attempt from ``address`` may go ahead now (and count it), else the
        seconds until one may."""
        now = self._clock()
        tokens, at = self._buckets.pop(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self._buckets[address] = (tokens - 1.0, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)  # the longest unused: full again by now
        return 0.0

    def refund(self, address: str) -> None:
        """Give back the token of ``address``'s attempt that succeeded."""
        got = self._buckets.get(address)
        if got is not None:
            self._buckets[address] = (min(self.burst, got[0] + 1.0), got[1])
