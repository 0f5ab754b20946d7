"""The dashboard's aiohttp application: :func:`make_app` wires the read model, the routes
of every part and the JSON error middleware."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import structlog
from aiohttp import web

from coord.client import Client, ClientError
from scheduler.admin import AdminError
from scheduler.dashboard import actions, api, live, pages
from scheduler.dashboard.context import CLIENT, MODEL, SETTINGS, Settings
from scheduler.dashboard.errors import CODES, ApiError
from scheduler.dashboard.model import ReadModel

log = structlog.get_logger("raftcron.dashboard")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_api(request: web.Request) -> bool:
    return request.path == api.PREFIX or request.path.startswith(api.PREFIX + "/")


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure of an ``/api/`` request as ``{"error": {"code", "message"}}`` with its
    status: an :class:`ApiError`, aiohttp's own (unknown route 404, wrong method 405), an
    admin refusal (409), the store unreachable (503). Pages handle their own errors."""
    if not _is_api(request):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as err:
        return web.json_response(err.body(), status=err.status)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        code = CODES.get(err.status, "bad_request")
        message = err.text if err.text and err.text != f"{err.status}: {err.reason}" \
            else err.reason
        return web.json_response({"error": {"code": code, "message": message}},
                                 status=err.status, headers=_allow(err))
    except AdminError as err:
        return web.json_response(ApiError(409, str(err)).body(), status=409)
    except ClientError as err:
        log.warning("dashboard.store_error", path=request.path, error=str(err))
        return web.json_response(
            ApiError(503, f"the store did not answer: {err}").body(), status=503)


HARDENING: Final = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
"""Sent with every answer: no page of another site may frame the dashboard (clickjacking
its action buttons), no answer is sniffed as another content type, and no URL (job names,
search terms) leaks to other sites in a Referer."""


async def _harden(_request: web.Request, response: web.StreamResponse) -> None:
    for name, value in HARDENING.items():
        response.headers.setdefault(name, value)


def _allow(err: web.HTTPException) -> dict[str, str]:
    allow = err.headers.get("Allow")
    return {"Allow": allow} if allow else {}


def make_app(client: Client, settings: Settings | None = None, *,
             model: ReadModel | None = None) -> web.Application:
    """The dashboard on ``client`` (which the caller opens and closes). The read model
    starts with the app (one read, then watches) and stops with it."""
    app = web.Application(middlewares=[json_errors])
    app[CLIENT] = client
    app[SETTINGS] = settings or Settings()
    app[MODEL] = model or ReadModel(client)
    app.cleanup_ctx.append(_run_model)
    app.on_shutdown.append(_end_streams)
    app.on_response_prepare.append(_harden)
    api.add_routes(app)
    live.add_routes(app)
    pages.add_routes(app)
    actions.add_routes(app)
    return app


async def _end_streams(app: web.Application) -> None:
    """Open event streams end when the server stops (else it waits for their clients)."""
    app[MODEL].hub.close()


async def _run_model(app: web.Application) -> AsyncIterator[None]:
    await app[MODEL].start()
    yield
    await app[MODEL].stop()
