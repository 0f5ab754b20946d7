"""The dashboard's HTML pages: server-rendered with Jinja2 (autoescaping) from exactly the
data the JSON API answers — each page calls its API handler in-process (never over the
network) and renders the JSON — plus a small vendored script (``static/dashboard.js``)
that follows ``/api/v1/events``, re-renders only the rows that changed, and catches up
after a gap by fetching the page again in place (docs/dashboard.md).

Paths (links can be shared): ``/`` overview, ``/jobs``, ``/jobs/<name>``, ``/locks``,
``/runs/<job>/<occurrence>``, ``/workers``, ``/cluster``; assets under ``/static/``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import jinja2
import structlog
from aiohttp import web

from coord.client import ClientError
from scheduler.admin import AdminError
from scheduler.claim import ACTIVE
from scheduler.cliviews import tags_text
from scheduler.dashboard import api
from scheduler.dashboard.context import CSRF_TOKEN, MODEL, SETTINGS, USER
from scheduler.dashboard.errors import ApiError

log = structlog.get_logger("raftcron.dashboard")

HERE = Path(__file__).parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
NAV = (("/", "Overview", "overview"), ("/jobs", "Jobs", "jobs"), ("/locks", "Locks", "locks"),
       ("/workers", "Workers", "workers"), ("/cluster", "Cluster", "cluster"))

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PAGE_REVISION = web.RequestKey("page_revision", int)
"""The read model's revision when the page's data was read (``<body data-revision>``)."""


# --------------------------------------------------------------------------- rendering


def when(value: object) -> str:
    """An instant as ``2026-12-06 23:41:02Z`` (UTC): ISO text or Unix seconds."""
    if value in (None, "", 0):
        return ""
    if isinstance(value, int | float):
        dt = datetime.fromtimestamp(value, UTC)
    else:
        try:
            dt = datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def in_zone(value: object, zone: str) -> str:
    """An ISO instant as wall time in ``zone`` with its abbreviation (``CEST``)."""
    try:
        dt = datetime.fromisoformat(str(value)).astimezone(ZoneInfo(zone))
    except (ValueError, KeyError):
        return str(value)
    return dt.strftime("%Y-%m-%d %H:%M:%S %Z (UTC%z)")


def suspension_text(suspension: Mapping[str, Any] | None, reason: str | None) -> str:
    """``Suspended by u@h at 2026-12-06 23:41:02Z: reason`` (dashboard.js writes the same)."""
    info = suspension or {}
    text = "Suspended"
    if info.get("by"):
        text += f" by {info['by']}"
    if info.get("at"):
        text += f" at {when(info['at'])}"
    if info.get("by_spec"):
        text += " (its spec says suspend: true)"
    why = info.get("reason") or reason
    return text + (f": {why}" if why else "")


def seconds_text(value: object) -> str:
    return "" if value is None or value == "" else f"{float(value):.1f}s"  # type: ignore[arg-type]


def ttl_text(value: object) -> str:
    if not isinstance(value, int | float) or value < 0:
        return ""
    return f"{round(value)}s"


def _asset_versions() -> dict[str, str]:
    """Each static file's content hash: its URL changes when it does (no stale cache)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12]
            for p in STATIC.iterdir() if p.is_file()}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    versions = _asset_versions()
    env.globals["static"] = lambda name: f"/static/{name}?v={versions.get(name, '0')}"
    env.globals["nav"] = NAV
    env.globals["suspension_text"] = suspension_text
    env.filters["when"] = when
    env.filters["duration"] = seconds_text
    env.filters["ttl"] = ttl_text
    env.filters["in_zone"] = in_zone
    env.filters["tags"] = tags_text
    return env


ENV = _environment()


def render(request: web.Request, template: str, *, status: int = 200,
           **context: Any) -> web.Response:
    """The page ``template`` with ``context``, the CSRF token and the user of the session
    (when the security layer put them on the request)."""
    context.setdefault("csrf_token", request.get(CSRF_TOKEN))
    context.setdefault("user", request.get(USER))
    context.setdefault("topics", "")
    context.setdefault("live_job", None)
    context.setdefault("live_occurrence", None)
    context.setdefault("revision", request.get(PAGE_REVISION, 0))
    html = ENV.get_template(template).render(**context)
    return web.Response(text=html, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store"})


def page(section: str) -> Callable[[Handler], Handler]:
    """A page handler whose failures are pages too: an unknown job or run 404, bad input
    400, the store not answering 503 — each one line, never a traceback."""
    def wrap(fn: Handler) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            # The model's revision before the page's data is read: the page shows at least
            # this; dashboard.js compares it with its event stream's (see refreshInPlace).
            request[PAGE_REVISION] = request.app[MODEL].revision
            try:
                return await fn(request)
            except ApiError as err:
                return _error(request, section, err.status, HEADINGS.get(err.status, "Error"),
                              err.message)
            except AdminError as err:
                return _error(request, section, 409, "Refused", str(err))
            except ClientError as err:
                log.warning("dashboard.page_store_error", path=request.path, error=str(err))
                return _error(request, section, 503, "The store did not answer", str(err))
        handler.__name__ = fn.__name__
        handler.__doc__ = fn.__doc__
        return handler
    return wrap


HEADINGS = {400: "Bad request", 401: "Sign in first", 403: "Forbidden", 404: "Not found",
            409: "Refused", 503: "The store did not answer"}


def _error(request: web.Request, section: str, status: int, heading: str,
           message: str) -> web.Response:
    return render(request, "error.html", status=status, page="error", section=section,
                  heading=heading, message=message)


# --------------------------------------------------------------------------- data


async def api_data(handler: Handler, request: web.Request) -> Any:
    """What the API handler answers for ``request``, decoded: a page shows exactly the
    API's data (the same model slice, the same store reads), called in-process."""
    response = await handler(request)
    assert isinstance(response, web.Response) and response.text is not None
    return json.loads(response.text)


def spec_rows(spec: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The spec as (field, text) rows in the file's order; unset fields left out."""
    rows = []
    for key, value in (spec or {}).items():
        if key == "name" or value in (None, "", {}, [], ()):
            continue
        if isinstance(value, Mapping):
            text = ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                             for k, v in sorted(value.items()))
        elif isinstance(value, list | tuple):
            text = (" ".join(str(v) for v in value) if key == "command" else
                    ", ".join(json.dumps(v) if isinstance(v, Mapping) else str(v)
                              for v in value))
        else:
            text = str(value)
        rows.append((key, text))
    return rows


def _link(path: str, params: Iterable[tuple[str, object]]) -> str:
    kept = [(k, v) for k, v in params if v not in ("", None)]
    return f"{path}?{urlencode(kept)}" if kept else path


def _leader_name(cluster: Mapping[str, Any]) -> str | None:
    for m in cluster.get("members") or ():
        if m.get("id") == cluster.get("leader"):
            return str(m.get("name"))
    return None


# --------------------------------------------------------------------------- pages


@page("overview")
async def overview_page(request: web.Request) -> web.Response:
    """Cluster health, workers alive, runs of the last hour, failing and overdue jobs,
    what runs now (live)."""
    data = await api_data(api.get_overview, request)
    cluster = data["cluster"]
    cluster["leader_name"] = _leader_name(cluster)
    return render(request, "overview.html", page="overview", section="overview",
                  topics="runs,workers", **data)


@page("jobs")
async def jobs_page(request: web.Request) -> web.Response:
    """A page of the jobs (server-side paging, search and filters), rows updated live."""
    data = await api_data(api.get_jobs, request)
    offset, limit, total = data["offset"], data["limit"], data["total"]
    q = request.query.get("q", "")
    filters = [("q", q), ("tag", request.query.get("tag", "")),
               ("status", request.query.get("status", "")),
               ("suspended", request.query.get("suspended", ""))]
    keep_limit = [("limit", limit if limit != api.LIMIT_DEFAULT else "")]
    prev_url = (_link("/jobs", [*filters, ("offset", max(0, offset - limit) or ""),
                                *keep_limit]) if offset > 0 else None)
    next_url = (_link("/jobs", [*filters, ("offset", offset + limit), *keep_limit])
                if offset + limit < total else None)
    statuses = [("", "any"), *((s, s) for s in sorted(api.STATUSES))]
    return render(request, "jobs.html", page="jobs", section="jobs", topics="jobs,runs",
                  jobs=data["jobs"], total=total, offset=offset, limit=limit,
                  prev_url=prev_url, next_url=next_url, statuses=statuses,
                  filters=dict(filters))


@page("jobs")
async def job_page(request: web.Request) -> web.Response:
    """One job: spec, next 10 fires in its zone (DST changes marked), what runs now,
    recent runs, and the action buttons."""
    data = await api_data(api.get_job, request)
    spec = data.get("spec")
    lock = data.get("lock")
    return render(
        request, "job.html", page="job", section="jobs", topics="runs,jobs,locks",
        live_job=data["name"], name=data["name"], deleted=data["deleted"],
        spec_rows=spec_rows(spec), timezone=(spec or {}).get("timezone") or "UTC",
        next_fires=data.get("next_fires") or [], runs=data.get("runs") or [],
        locks=[lock] if lock and lock.get("worker") else [],
        suspended=data.get("suspended"), reason=data.get("reason"),
        suspension=data.get("suspension"))


@page("jobs")
async def run_page(request: web.Request) -> web.Response:
    """One run: its record, attempts and output (live while it runs)."""
    run = await api_data(api.get_run, request)
    record_rows = [(key, run.get(key)) for key in (
        "status", "worker", "host", "pid", "attempt", "fencing_token", "claimed_at",
        "started_at", "finished_at", "duration", "exit_code", "signal", "note")]
    record_rows = [(k, when(v) if k.endswith("_at") else ("" if v is None else str(v)))
                   for k, v in record_rows]
    return render(
        request, "run.html", page="run", section="jobs", topics="runs,output",
        live_job=run["job"], live_occurrence=run["occurrence"], job=run["job"],
        occurrence=run["occurrence"], run=run, record_rows=record_rows,
        attempts=run.get("attempts") or [], output=run.get("output") or "",
        active=run["status"] in ACTIVE)


@page("locks")
async def locks_page(request: web.Request) -> web.Response:
    """Who holds each job's lock, TTL counting down, updated live."""
    data = await api_data(api.get_locks, request)
    return render(request, "locks.html", page="locks", section="locks", topics="locks",
                  locks=[row for row in data["locks"] if row.get("worker")])


@page("workers")
async def workers_page(request: web.Request) -> web.Response:
    data = await api_data(api.get_workers, request)
    return render(request, "workers.html", page="workers", section="workers",
                  topics="workers", workers=data["workers"])


@page("cluster")
async def cluster_page(request: web.Request) -> web.Response:
    cluster = await api_data(api.get_cluster, request)
    cluster["leader_name"] = _leader_name(cluster)
    member_columns = ["id", "name", "peer_urls", "client_urls", "learner"]
    status_columns = ["endpoint", "id", "name", "leader", "raft_term", "raft_index",
                      "applied_index", "version", "db_size", "error"]
    return render(
        request, "cluster.html", page="cluster", section="cluster", cluster=cluster,
        member_columns=member_columns, status_columns=status_columns,
        member_rows=[[m.get(c, "") for c in member_columns] for m in cluster["members"]],
        status_rows=[[r.get(c, "") for c in status_columns] for r in cluster["status"]],
        endpoints=request.app[SETTINGS].endpoints)


def add_routes(app: web.Application) -> None:
    """Register the page routes and the static assets on ``app``."""
    app.router.add_get("/", overview_page)
    app.router.add_get("/jobs", jobs_page)
    app.router.add_get("/jobs/{name}", job_page)
    app.router.add_get("/runs/{name}/{occurrence}", run_page)
    app.router.add_get("/locks", locks_page)
    app.router.add_get("/workers", workers_page)
    app.router.add_get("/cluster", cluster_page)
    app.router.add_static("/static/", STATIC, append_version=False)
