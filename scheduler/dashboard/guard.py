"""The dashboard's gate: one aiohttp middleware that every request passes
(docs/dashboard-security.md).

In order, for each request:

1. Is the store's authentication on? (:class:`AuthProbe`, asked again every few seconds:
   auth may be switched on or off while the dashboard runs.)
2. Without store auth, only loopback: the request must have come in on a loopback address
   of this host and name a loopback host (``Host``: ``127.0.0.1``, ``[::1]``,
   ``localhost``), so neither another host nor a web page whose name was re-pointed at
   127.0.0.1 (DNS rebinding) reaches it. Otherwise 403.
3. The session: the cookie's id. Under auth it must name a live session (a login), except
   for the login page and call, the session call and static files: an API call without one
   gets 401 ``unauthenticated``, a page a redirect to ``/login``. A session's user is asked
   again every :data:`~scheduler.dashboard.session.RECHECK_SECONDS` whether the store still
   lets it read raftcron's keys.
4. A state-changing request (any method but GET, HEAD, OPTIONS) must come from the
   dashboard's own origin (``Origin``, else ``Referer``, equal to ``scheme://Host``, the
   scheme ``https`` also, for a TLS proxy in front) and,
   but for the login itself, carry the CSRF token bound to the cookie (header
   ``X-CSRF-Token`` or form field ``csrf_token``). Otherwise 403, before any handler runs.

The request then carries ``request[CSRF_TOKEN]`` (for pages' ``<meta name="csrf-token">``),
``request[USER]`` (None without store auth), ``request[SESSION]`` and ``request[STORE]``
(the user's own store client, None without store auth). A request for no route, or a
method the route lacks, goes on to the router's 404/405 after step 2: it reaches no
handler.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import grpc
import structlog
from aiohttp import web

from coord.client import Client, ClientError, ClientTLS, ServerError, UnavailableError
from coord.client.channels import Endpoint
from coord.netaddr import is_loopback
from coord.pb import rpc_pb2, rpc_pb2_grpc
from scheduler import keys
from scheduler.dashboard.context import CSRF_TOKEN, USER
from scheduler.dashboard.session import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    LoginLimiter,
    Session,
    SessionStore,
    csrf_ok,
    csrf_token,
    new_id,
    plausible_id,
)

log = structlog.get_logger("raftcron.dashboard")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PATHS = frozenset({"/login", "/api/v1/login", "/api/v1/session"})
"""Reachable without a session under auth (the login, and what a client needs to log in)."""
PUBLIC_PREFIXES = ("/static/",)
NO_CSRF_PATHS = frozenset({"/login", "/api/v1/login"})
"""State-changing without a CSRF token: the login (no session yet; same origin still)."""
PROBE_SECONDS = 2.0
"""How long the store's answer to "is auth on?" is reused."""
NOT_ENABLED = "authentication is not enabled"
AUTH_FAILED = "authentication failed"
USER_EMPTY = "user name is empty"


def json_error(status: int, code: str, message: str,
               headers: dict[str, str] | None = None) -> web.Response:
    """The dashboard's error body: ``{"error": {"code": ..., "message": ...}}``."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers=headers)


class AuthProbe:
    """Whether the store has authentication on, asked on a connection of its own with no
    credentials: a read of the key ``/cron/`` without a token succeeds while auth is off
    and gets "user name is empty" while it is on (etcd's and coord's answers).

    A connection with a client certificate would be taken as the certificate's user, so
    with one the probe asks ``Authenticate`` with an empty user name instead ("not
    enabled" or "failed"; etcd logs each such refusal, hence not the default). Either way
    an answer the probe does not know is an error, never "no auth"."""

    def __init__(self, client: Client, clock: Callable[[], float] = time.monotonic) -> None:
        tls = client.tls
        self._by_login = tls is not None and tls.cert is not None
        self._client = Client(client.endpoints, timeout=5, tls=tls)
        self._clock = clock
        self._known: bool | None = None
        self._at = 0.0

    async def close(self) -> None:
        await self._client.close()

    async def enabled(self) -> bool:
        """Raises ClientError when the store cannot be asked and no answer is known yet."""
        now = self._clock()
        if self._known is not None and now - self._at < PROBE_SECONDS:
            return self._known
        try:
            self._known = await (self._ask_login() if self._by_login else self._ask_read())
        except ClientError:
            if self._known is None:
                raise
            return self._known  # the last answer, while the store is briefly away
        self._at = now
        return self._known

    async def _ask_read(self) -> bool:
        try:
            await self._client.get(keys.ROOT, count_only=True)
        except UnavailableError:
            raise
        except ServerError as err:
            if USER_EMPTY in err.message:
                return True
            raise
        return False

    async def _ask_login(self) -> bool:
        async def run(ep: Endpoint, t: float) -> bool:
            stub: Any = rpc_pb2_grpc.AuthStub(ep.channel)
            try:
                await stub.Authenticate(rpc_pb2.AuthenticateRequest(name="", password=""),
                                        timeout=t)
            except grpc.aio.AioRpcError as err:
                details = err.details() or ""
                if NOT_ENABLED in details:
                    return False
                if AUTH_FAILED in details:
                    return True
                raise
            return True  # a user with an empty name and password: auth is on
        return await self._client._call(run, idempotent=True)


@dataclass
class Security:
    """What the gate needs: the store's address (for each user's own client), the probe,
    the sessions, the login limiter and this process's CSRF secret."""

    endpoints: list[str]
    tls: ClientTLS | None
    probe: AuthProbe
    sessions: SessionStore = field(default_factory=SessionStore)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    secret: bytes = field(default_factory=lambda: new_id().encode(), repr=False)


SECURITY = web.AppKey("raftcron_security", Security)
AUTH_ENABLED = web.RequestKey("auth_enabled", bool)
SESSION = web.RequestKey[Session | None]("session")
STORE = web.RequestKey[Any]("store")
"""The user's own store client (None without store auth)."""
NEW_COOKIE = web.RequestKey("new_cookie", str)
"""A binding id the response must set as the cookie (the request came without one)."""
# The user and the CSRF token the pages and actions read are context.USER / CSRF_TOKEN.


def loopback_host(host_header: str) -> bool:
    """Whether a ``Host`` header names this host's loopback (any port)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return is_loopback(host)


def same_origin(request: web.Request) -> bool:
    """Whether ``Origin`` (else ``Referer``) names ``scheme://Host`` of this request. The
    scheme may be ``https`` while the dashboard sees plain HTTP — a TLS proxy in front of
    it, as the docs advise, passes the browser's ``https://`` origin on — but the
    ``Host`` (name and port) must be the request's own, and the CSRF token is still
    required: no other site's page can send either."""
    schemes = {f"{scheme}://{request.host}".lower() for scheme in (request.scheme, "https")}
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin.strip().lower() in schemes
    referer = request.headers.get("Referer")
    if not referer:
        return False
    parts = urlsplit(referer.strip())
    return f"{parts.scheme}://{parts.netloc}".lower() in schemes


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _api(path: str) -> bool:
    return path.startswith("/api/")


def _local_loopback(request: web.Request) -> bool:
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    if not sock:
        return False
    return is_loopback(str(sock[0]))


async def still_allowed(client: Any, *, whole: bool = False) -> str | None:
    """Why the user of ``client`` may not see raftcron's keys (None if it may): a count of
    ``/cron/`` as that user, which the store refuses without read permission there — the
    whole prefix (at login: every key counted once), else the key ``/cron/`` alone (the
    periodic check: the store checks a permission, not thousands of keys)."""
    try:
        await client.get(keys.ROOT, prefix=whole, count_only=True)
    except UnavailableError:
        raise
    except ServerError as err:
        if err.code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
                        grpc.StatusCode.INVALID_ARGUMENT):
            return err.message
        raise
    return None


@web.middleware
async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    sec = request.app[SECURITY]
    for ended in sec.sessions.take_closing():  # sessions dropped since the last request
        await ended.close()
    try:
        auth = await sec.probe.enabled()
    except ClientError as err:
        return json_error(503, "unavailable",
                          f"cannot ask the store whether its authentication is on: {err}")
    path = request.path
    if not auth and not (_local_loopback(request) and loopback_host(request.host)):
        return json_error(403, "forbidden",
                          "the store's authentication is off, so this dashboard answers only "
                          "on loopback, to a loopback host name (127.0.0.1, [::1], localhost)")
    if request.match_info.http_exception is not None:
        return await handler(request)  # no such route or method: the router's 404/405
    sid = request.cookies.get(COOKIE)
    if not plausible_id(sid):
        sid = None
    session = sec.sessions.get(sid) if auth else None
    if session is not None and sec.sessions.due_recheck(session):
        try:
            why = await still_allowed(session.client)
        except ClientError as err:
            return json_error(503, "unavailable", f"the store did not answer: {err}")
        if why is not None:
            log.info("dashboard.session_ended", user=session.user, reason=why)
            sec.sessions.drop(session.id)
            session = None
        else:
            sec.sessions.rechecked(session)
    if sid is None:
        sid = new_id()
        request[NEW_COOKIE] = sid
    request[AUTH_ENABLED] = auth
    request[SESSION] = session
    request[STORE] = session.client if session is not None else None
    request[USER] = session.user if session is not None else None
    request[CSRF_TOKEN] = csrf_token(sec.secret, sid)

    unsafe = request.method not in SAFE_METHODS
    if unsafe and not same_origin(request):
        return json_error(403, "forbidden",
                          "cross-origin request refused: a state-changing request must carry "
                          "an Origin (or Referer) naming this dashboard")
    if auth and session is None and not _public(path):
        if _api(path) or unsafe:
            return json_error(401, "unauthenticated",
                              "log in first (POST /api/v1/login or the /login page)")
        return web.Response(status=303, headers={
            "Location": f"/login?next={quote(request.path_qs, safe='')}"})
    if unsafe and path not in NO_CSRF_PATHS:
        presented = request.headers.get(CSRF_HEADER)
        if presented is None and request.content_type == "application/x-www-form-urlencoded":
            presented = str((await request.post()).get(CSRF_FIELD, "")) or None
        if not csrf_ok(sec.secret, sid, presented):
            return json_error(403, "forbidden",
                              f"missing or wrong CSRF token (send the {CSRF_HEADER} header "
                              "from GET /api/v1/session or the page's csrf-token meta)")
    return await handler(request)


def cookie_header(request: web.Request, sid: str, *, clear: bool = False) -> str:
    """The ``Set-Cookie`` value for ``sid``: HttpOnly, SameSite=Strict, path /, Secure when
    the dashboard is served over TLS; ``clear`` expires it."""
    parts = [f"{COOKIE}={'' if clear else sid}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if clear:
        parts.append("Max-Age=0")
    if request.secure:
        parts.append("Secure")
    return "; ".join(parts)


async def add_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: send the cookie of a new binding id, streams included."""
    sid = request.get(NEW_COOKIE)
    if sid and "Set-Cookie" not in response.headers:
        response.headers["Set-Cookie"] = cookie_header(request, sid)


def install(app: web.Application, client: Client) -> Security:
    """Put the gate in front of every handler of ``app``, whose store client is ``client``
    (it asks whether auth is on; each user's client goes to the same endpoints)."""
    sec = Security(list(client.endpoints), client.tls, AuthProbe(client))
    app[SECURITY] = sec
    app.middlewares.append(gate)
    app.on_response_prepare.append(add_cookie)

    async def close(_app: web.Application) -> None:
        for ended in sec.sessions.drop_all():
            await ended.close()
        await sec.probe.close()
    app.on_cleanup.append(close)
    return sec
