"""Logging in and out of the dashboard against the store's own users
(docs/dashboard-security.md).

``POST /api/v1/login`` (JSON ``{"user": ..., "password": ...}``) and the ``/login`` form
authenticate to the store as that user (etcd's ``Authenticate``, through a client of the
user's own); the store must also let the user read raftcron's keys (``/cron/``), since the
pages show them. The session then keeps that client server-side. Attempts are limited per
client address (:class:`~scheduler.dashboard.session.LoginLimiter`); a refused one is
logged with the user name, never the password.

``POST /api/v1/logout`` (or the ``/logout`` form) ends the session; ``GET /api/v1/session``
says whether a login is needed, who is logged in, and the CSRF token to send.
"""

from __future__ import annotations

import math
from typing import Any

import jinja2
import structlog
from aiohttp import web

from coord.client import Client, ClientAuth, ClientError, UnavailableError
from scheduler.dashboard.context import CSRF_TOKEN, USER
from scheduler.dashboard.guard import (
    AUTH_ENABLED,
    AUTH_FAILED,
    SECURITY,
    SESSION,
    Security,
    cookie_header,
    json_error,
    still_allowed,
)
from scheduler.dashboard.session import csrf_token

log = structlog.get_logger("raftcron.dashboard")

MAX_USER = 256
MAX_PASSWORD = 1024

_PAGE = jinja2.Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="csrf-token" content="{{ csrf }}">
<title>raftcron — log in</title>
<link rel="stylesheet" href="/static/dashboard.css">
</head><body class="login">
<main>
<h1>raftcron</h1>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
{% if not auth %}<p>The store's authentication is off: no login is needed.
<a href="/">Go to the dashboard</a>.</p>{% endif %}
<form method="post" action="/login">
<input type="hidden" name="next" value="{{ next }}">
<label>User <input name="user" autocomplete="username" value="{{ user }}" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password"
required></label>
<button type="submit">Log in</button>
</form>
</main></body></html>
""")


class LoginRefused(Exception):
    """A login the dashboard refuses: HTTP status, error code, one-line message."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers


def safe_next(value: object) -> str:
    """A local path to go to after login (never another site: ``//host`` or ``/\\host``
    are refused), else ``/``."""
    text = value if isinstance(value, str) else ""
    if not text.startswith("/") or text.startswith(("//", "/\\")) or any(
            c in text for c in "\r\n\t"):
        return "/"
    return text


async def _login(request: web.Request, user: object, password: object) -> tuple[str, str]:
    """Authenticate ``user`` to the store and open its session: (session id, user)."""
    sec: Security = request.app[SECURITY]
    address = request.remote or "?"
    wait = sec.limiter.allow(address)
    if wait:
        log.warning("dashboard.login_limited", address=address)
        raise LoginRefused(429, "rate_limited",
                           f"too many login attempts from {address}: try again in "
                           f"{math.ceil(wait)} s", {"Retry-After": str(math.ceil(wait))})
    if not isinstance(user, str) or not user or len(user) > MAX_USER:
        raise LoginRefused(400, "bad_request", f"user: a name of 1-{MAX_USER} characters")
    if not isinstance(password, str) or len(password) > MAX_PASSWORD:
        raise LoginRefused(400, "bad_request",
                           f"password: a string of at most {MAX_PASSWORD} characters")
    if not request[AUTH_ENABLED]:
        raise LoginRefused(409, "conflict",
                           "the store's authentication is off: no login is needed")
    client = Client(sec.endpoints, timeout=5, tls=sec.tls, auth=ClientAuth(user, password))
    try:
        why = await still_allowed(client, whole=True)
    except UnavailableError as err:
        await client.close()
        raise LoginRefused(503, "unavailable", f"the store did not answer: {err}") from None
    except ClientError as err:
        await client.close()
        raise LoginRefused(502, "unavailable", f"the store refused the login: {err}") from None
    if why is not None:
        await client.close()
        if AUTH_FAILED in why or "invalid auth token" in why:
            log.warning("dashboard.login_failed", user=user, address=address)
            raise LoginRefused(401, "unauthenticated", "wrong user name or password")
        log.warning("dashboard.login_forbidden", user=user, address=address, reason=why)
        raise LoginRefused(403, "forbidden",
                           f"user {user!r} may not read raftcron's keys (/cron/): grant it "
                           f"a raftcron role, e.g. raftcron-viewer ({why})")
    old = request.get(SESSION)
    if old is not None:
        sec.sessions.drop(old.id)
    sec.limiter.refund(address)
    session = sec.sessions.create(user, client)
    log.info("dashboard.login", user=user, address=address)
    return session.id, user


async def api_login(request: web.Request) -> web.StreamResponse:
    try:
        body: Any = await request.json()
    except ValueError:
        return json_error(400, "bad_request",
                          'the body must be JSON: {"user": "...", "password": "..."}')
    if not isinstance(body, dict) or set(body) - {"user", "password"}:
        return json_error(400, "bad_request",
                          'the body must be JSON: {"user": "...", "password": "..."}')
    try:
        sid, user = await _login(request, body.get("user"), body.get("password", ""))
    except LoginRefused as err:
        return json_error(err.status, err.code, err.message, err.headers)
    sec: Security = request.app[SECURITY]
    resp = web.json_response({"ok": True, "user": user,
                              "csrf_token": csrf_token(sec.secret, sid)})
    resp.headers["Set-Cookie"] = cookie_header(request, sid)
    return resp


def _page(request: web.Request, *, error: str = "", user: str = "", next_: str = "/",
          status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    html = _PAGE.render(csrf=request[CSRF_TOKEN], error=error, user=user, next=next_,
                        auth=request[AUTH_ENABLED])
    return web.Response(text=html, content_type="text/html", status=status,
                        headers=headers)


async def login_page(request: web.Request) -> web.StreamResponse:
    return _page(request, next_=safe_next(request.query.get("next")))


async def login_form(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    user = form.get("user")
    next_ = safe_next(form.get("next"))
    try:
        sid, _ = await _login(request, user, form.get("password", ""))
    except LoginRefused as err:
        return _page(request, error=err.message, user=user if isinstance(user, str) else "",
                     next_=next_, status=err.status, headers=err.headers)
    return web.Response(status=303, headers={"Location": next_,
                                              "Set-Cookie": cookie_header(request, sid)})


def _logout(request: web.Request) -> None:
    session = request.get(SESSION)
    if session is not None:
        request.app[SECURITY].sessions.drop(session.id)
        log.info("dashboard.logout", user=session.user)


async def api_logout(request: web.Request) -> web.StreamResponse:
    _logout(request)
    resp = web.json_response({"ok": True})
    resp.headers["Set-Cookie"] = cookie_header(request, "", clear=True)
    return resp


async def logout_form(request: web.Request) -> web.StreamResponse:
    _logout(request)
    return web.Response(status=303, headers={
        "Location": "/login", "Set-Cookie": cookie_header(request, "", clear=True)})


async def session_info(request: web.Request) -> web.StreamResponse:
    return web.json_response({"auth": request[AUTH_ENABLED], "user": request[USER],
                              "csrf_token": request[CSRF_TOKEN]})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_form)
    app.router.add_post("/logout", logout_form)
    app.router.add_post("/api/v1/login", api_login)
    app.router.add_post("/api/v1/logout", api_logout)
    app.router.add_get("/api/v1/session", session_info)

