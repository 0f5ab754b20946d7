"""``GET /api/v1/events``: the model's changes as server-sent events (docs/api.md).

``?topics=locks,runs,jobs,output,workers`` (default: all but ``output``) and ``&job=NAME``
(only that job's changes). The stream opens with a ``ready`` event (the store revision the
model has reached), then sends one event per change — ``lock``, ``run``, ``job``,
``output``, ``worker`` — whose data is the changed item as JSON; nothing is sent that did
not change, and a comment line every :data:`KEEPALIVE` seconds keeps proxies from closing
an idle stream. Every subscriber shares the model's watches (:mod:`.hub`).
"""

from __future__ import annotations

import json
import time
from typing import Final

import structlog
from aiohttp import web

from coord.aiotools import within
from coord.client import ClientError
from scheduler.dashboard.api import PREFIX, READY_WAIT
from scheduler.dashboard.context import MODEL
from scheduler.dashboard.errors import ApiError, bad_request
from scheduler.dashboard.guard import SECURITY, SESSION, still_allowed
from scheduler.dashboard.hub import TOPICS
from scheduler.dashboard.session import Session
from scheduler.keys import valid_job

log = structlog.get_logger("raftcron.dashboard")

KEEPALIVE: Final = 15.0
"""Seconds of silence after which a comment line is sent."""
DEFAULT_TOPICS: Final = frozenset({"locks", "runs", "jobs", "workers"})
SESSION_CHECK: Final = 1.0
"""Under store auth, how often an idle stream checks that its session is still on (a
logout or a revoked role ends the stream within about this long)."""
RETRY_MS: Final = 2000
"""How long a browser's EventSource waits before reconnecting (sent as ``retry:``)."""
MAX_STREAMS: Final = 256
"""Event streams served at once; past it a new one gets 503 (a browser opens one per tab,
so this is many users; it bounds the memory of queues and connections a flood can take)."""


def _topics(raw: str) -> frozenset[str]:
    if not raw.strip():
        return DEFAULT_TOPICS
    asked = frozenset(t.strip() for t in raw.split(",") if t.strip())
    unknown = sorted(asked - set(TOPICS))
    if unknown:
        raise bad_request(f"unknown topic(s) {', '.join(unknown)}: use "
                          f"{', '.join(sorted(TOPICS))}")
    return asked


async def _session_holds(request: web.Request, session: Session) -> bool:
    """Whether the stream's session is still on (under store auth): not logged out, not
    expired, and — asked again every RECHECK_SECONDS, as for a request — its user still
    allowed to read raftcron's keys. Else the session ends and so does the stream."""
    sec = request.app[SECURITY]
    if not sec.sessions.alive(session.id):
        return False
    if not sec.sessions.due_recheck(session):
        return True
    try:
        why = await still_allowed(session.client)
    except ClientError:
        return True  # the store is briefly away: the next check asks again
    if why is not None:
        log.info("dashboard.session_ended", user=session.user, reason=why)
        sec.sessions.drop(session.id)
        return False
    sec.sessions.rechecked(session)
    return True


def frame(event: str, data: object) -> bytes:
    """One SSE message (JSON has no raw newline, so one ``data:`` line)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def events(request: web.Request) -> web.StreamResponse:
    topics = _topics(request.query.get("topics", ""))
    job = request.query.get("job") or None
    if job is not None and not valid_job(job):
        raise bad_request(f"job: {job!r} is not a valid job name")
    model = request.app[MODEL]
    if len(model.hub) >= MAX_STREAMS:
        raise ApiError(503, f"too many open event streams ({MAX_STREAMS}): close a page's "
                       "tab or try again later")
    # Subscribed before the response starts: no change between the two is missed.
    sub = model.hub.subscribe(topics, job)
    try:
        resp = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        await resp.write(f"retry: {RETRY_MS}\n\n".encode())
        # ``ready`` once the model holds the store's state: what the client reads from
        # the API after it is at least as new as the changes that follow.
        await model.wait_ready(READY_WAIT)
        await resp.write(frame("ready", {"revision": model.revision, "ready": model.ready,
                                         "topics": sorted(topics), "job": job}))
        session = request.get(SESSION)
        wake = SESSION_CHECK if session is not None else KEEPALIVE
        quiet_since = time.monotonic()
        while True:
            try:
                event, data = await within(sub.queue.get(), wake)
            except TimeoutError:
                if session is not None and not await _session_holds(request, session):
                    break
                if time.monotonic() - quiet_since >= KEEPALIVE:
                    await resp.write(b": keepalive\n\n")
                    quiet_since = time.monotonic()
                continue
            if event in ("overflow", "closed"):
                break
            if session is not None and not await _session_holds(request, session):
                break
            await resp.write(frame(event, data))
            quiet_since = time.monotonic()
    except (ConnectionResetError, ConnectionError):
        pass  # the browser went away
    finally:
        model.hub.unsubscribe(sub)
    return resp


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/events", events)
