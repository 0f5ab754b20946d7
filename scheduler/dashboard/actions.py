"""The dashboard's actions: ``POST /api/v1/jobs/<name>/trigger|kill|suspend|resume``
(docs/api.md, docs/dashboard-security.md).

Each does what the CLI command of the same name does, through :mod:`scheduler.admin`, with
the acting user's own store client when the store has auth (the store then enforces the
same roles as for the CLI: a viewer's trigger is the store's "permission denied", 403
``forbidden``), and writes the same audit record as the CLI (:mod:`scheduler.audit`),
naming the user and the browser's address.

Bodies are JSON objects: trigger and resume take none (``{}``), kill takes an optional
``{"occurrence": "<id>"}``, suspend an optional ``{"reason": "..."}`` (empty, as
``raftcron jobs suspend`` allows; at most :data:`MAX_REASON` characters). Answers:
``{"ok": true, "job": ..., ...}``; errors as the rest of the API: unknown job 404, the
action not possible now (nothing running to kill, a ``forbid`` job already running, a spec
that says ``suspend: true``) 409, bad body 400, store down 503.

The gate (:mod:`.guard`) has already checked the session, the origin and the CSRF token
before a handler here runs; :func:`add_routes` installs it along with the login routes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import structlog
from aiohttp import web

from coord.client import ClientError, ServerError, UnavailableError
from scheduler import admin, keys
from scheduler.audit import AuditedClient, Identity
from scheduler.dashboard import guard, login
from scheduler.dashboard.context import CLIENT, USER
from scheduler.dashboard.guard import STORE, json_error
from scheduler.plan import normalize_occurrence

log = structlog.get_logger("raftcron.dashboard")

MAX_REASON = 1000
"""Longest suspension reason the dashboard takes (it is shown on every job page)."""
UNAUTHENTICATED = ("user name is empty", "invalid auth token", "authentication failed")

# The client is an AuditedClient standing in for a Client (as the CLI passes it to admin).
Action = Callable[[Any, str, dict[str, Any]], Awaitable[dict[str, Any]]]


class BadBody(Exception):
    """The request body is not what the action takes (400)."""


async def _body(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    if request.content_type != "application/json":
        raise BadBody("send a JSON body (Content-Type: application/json)")
    try:
        body = await request.json()
    except ValueError:
        raise BadBody("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadBody("the body must be a JSON object")
    extra = sorted(set(body) - allowed)
    if extra:
        takes = ", ".join(sorted(allowed)) or "no fields"
        raise BadBody(f"unknown field(s) {', '.join(map(repr, extra))}: this action takes "
                      f"{takes}")
    return body


def _identity(request: web.Request) -> Identity:
    """The audit record's who (the store user; ``anonymous`` without store auth, as the
    CLI without ``--user``) and from where (the browser's address, via the dashboard)."""
    return Identity(who=request.get(USER) or "anonymous", host=request.remote or "?",
                    pid=os.getpid(), os_user="dashboard")


async def _trigger(client: Any, name: str, _: dict[str, Any]) -> dict[str, Any]:
    return {"occurrence": await admin.trigger(client, name)}


async def _kill(client: Any, name: str, body: dict[str, Any]) -> dict[str, Any]:
    occurrence = body.get("occurrence")
    if occurrence is not None:
        if not isinstance(occurrence, str):
            raise BadBody("occurrence: a string (see the job's runs)")
        try:
            occurrence = normalize_occurrence(occurrence)
        except ValueError as err:
            raise BadBody(f"occurrence: {err}") from None
    going = await admin.kill(client, name, occurrence,
                             f"dashboard kill by {client.identity.who}")
    return {"killed": going}


async def _suspend(client: Any, name: str, body: dict[str, Any]) -> dict[str, Any]:
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise BadBody(f"reason: a string of at most {MAX_REASON} characters")
    changed = await admin.set_suspended(client, name, True, reason)
    return {"suspended": True, "changed": changed}


async def _resume(client: Any, name: str, _: dict[str, Any]) -> dict[str, Any]:
    changed = await admin.set_suspended(client, name, False)
    return {"suspended": False, "changed": changed}


ACTIONS: dict[str, tuple[Action, frozenset[str]]] = {
    "trigger": (_trigger, frozenset()),
    "kill": (_kill, frozenset({"occurrence"})),
    "suspend": (_suspend, frozenset({"reason"})),
    "resume": (_resume, frozenset()),
}


def _store_refusal(err: ServerError, user: str | None, action: str,
                   name: str) -> web.Response | None:
    """The answer to the store refusing the user, or None for another error."""
    who = f"user {user!r}" if user else "the dashboard's store identity"
    if err.code == grpc.StatusCode.PERMISSION_DENIED or "permission denied" in err.message:
        return json_error(403, "forbidden",
                          f"{who} may not {action} job {name!r}: {err.message}")
    if any(text in err.message for text in UNAUTHENTICATED):
        return json_error(401, "unauthenticated",
                          f"the store no longer accepts {who}: log in again ({err.message})")
    return None


async def act(request: web.Request) -> web.StreamResponse:
    action = request.match_info["action"]
    name = request.match_info["name"]
    if action not in ACTIONS:
        return json_error(404, "not_found", f"no action {action!r}: one of "
                          + ", ".join(ACTIONS))
    if not keys.valid_job(name):
        return json_error(400, "bad_request", f"{name!r} is not a job name")
    fn, allowed = ACTIONS[action]
    store = request.get(STORE) or request.app[CLIENT]
    client = AuditedClient(store, _identity(request))
    user = request.get(USER)
    try:
        body = await _body(request, allowed)
        result = await fn(client, name, body)
    except BadBody as err:
        return json_error(400, "bad_request", str(err))
    except admin.AdminError as err:
        message = str(err)
        if message.startswith("no job named"):
            return json_error(404, "not_found", message)
        return json_error(409, "conflict", message)
    except UnavailableError as err:
        return json_error(503, "unavailable", f"the store did not answer: {err}")
    except ServerError as err:
        refused = _store_refusal(err, user, action, name)
        if refused is None:
            raise
        log.info("dashboard.action_refused", action=action, job=name, user=user,
                 address=request.remote, error=err.message)
        return refused
    if client.wrote:
        with contextlib.suppress(ClientError):
            await client.bound()  # as the CLI: the next audited write bounds the trail
    log.info("dashboard.action", action=action, job=name, user=user, address=request.remote)
    return web.json_response({"ok": True, "job": name, "action": action, **result})


def add_routes(app: web.Application) -> None:
    """Register the action routes on ``app``, with the gate in front of every route and
    the login routes (:mod:`.guard`, :mod:`.login`)."""
    guard.install(app, app[CLIENT])
    login.add_routes(app)
    app.router.add_post("/api/v1/jobs/{name}/{action}", act)
