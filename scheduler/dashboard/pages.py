"""The dashboard's HTML pages: server-rendered with Jinja2 (autoescaping) from the read
model and :mod:`scheduler.admin` — the same data as the JSON API, never by calling it over
the network — plus a small vendored script (``static/dashboard.js``) that follows
``/api/v1/events`` and re-renders only the rows that changed (docs/dashboard.md).

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

import jinja2
import structlog
from aiohttp import web

from coord.client import ClientError
from scheduler import admin, suspension
from scheduler.admin import AdminError
from scheduler.attempts import attempts_of, duration
from scheduler.claim import ACTIVE
from scheduler.cliviews import attempt_json, tags_text
from scheduler.clusterview import cluster_members, cluster_status
from scheduler.dashboard.context import CLIENT, SETTINGS
from scheduler.plan import Timetable

log = structlog.get_logger("raftcron.dashboard")

HERE = Path(__file__).parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
NEXT_FIRES = 10
RUNS_SHOWN = 50
NAV = (("/", "Overview", "overview"), ("/jobs", "Jobs", "jobs"), ("/locks", "Locks", "locks"),
       ("/workers", "Workers", "workers"), ("/cluster", "Cluster", "cluster"))

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    env.filters["when"] = when
    env.filters["duration"] = seconds_text
    env.filters["ttl"] = ttl_text
    env.filters["tags"] = tags_text
    return env


ENV = _environment()


def render(request: web.Request, template: str, *, status: int = 200,
           **context: Any) -> web.Response:
    """The page ``template`` with ``context``, the CSRF token and the user of the session
    (when the security layer put them on the request)."""
    context.setdefault("csrf_token", request.get("csrf_token"))
    context.setdefault("user", request.get("user"))
    context.setdefault("topics", "")
    context.setdefault("live_job", None)
    context.setdefault("live_occurrence", None)
    html = ENV.get_template(template).render(**context)
    return web.Response(text=html, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store"})


def page(section: str) -> Callable[[Handler], Handler]:
    """A page handler whose failures are pages too: an unknown job or run 404, bad input
    400, the store not answering 503 — each one line, never a traceback."""
    def wrap(fn: Handler) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                return await fn(request)
            except NotFound as err:
                return _error(request, section, 404, "Not found", str(err))
            except BadInput as err:
                return _error(request, section, 400, "Bad request", str(err))
            except AdminError as err:
                return _error(request, section, 409, "Refused", str(err))
            except ClientError as err:
                log.warning("dashboard.page_store_error", path=request.path, error=str(err))
                return _error(request, section, 503, "The store did not answer", str(err))
        handler.__name__ = fn.__name__
        handler.__doc__ = fn.__doc__
        return handler
    return wrap


class NotFound(Exception):
    """The page's job or run does not exist."""


class BadInput(Exception):
    """A query parameter of the page is not valid."""


def _error(request: web.Request, section: str, status: int, heading: str,
           message: str) -> web.Response:
    return render(request, "error.html", status=status, page="error", section=section,
                  heading=heading, message=message)


# --------------------------------------------------------------------------- data


def next_fires(timetable: Timetable, now: datetime,
               count: int = NEXT_FIRES) -> list[dict[str, Any]]:
    """The next ``count`` fire instants after ``now``, each with its wall time in the job's
    zone and whether the zone's UTC offset changed (a DST transition) since the fire before
    it (or since ``now`` for the first)."""
    out: list[dict[str, Any]] = []
    prev_offset = now.astimezone(timetable.zone).utcoffset()
    for instant in timetable.iter_after(now):
        local = instant.astimezone(timetable.zone)
        offset = local.utcoffset()
        out.append({"at": instant.isoformat(), "dst": offset != prev_offset,
                    "local": local.strftime("%Y-%m-%d %H:%M:%S %Z (UTC%z)")})
        prev_offset = offset
        if len(out) == count:
            break
    return out


def lock_row(item: Mapping[str, Any]) -> dict[str, Any]:
    """A lock as the pages and the ``lock`` event show it (admin's ``ttl`` is ``ttl_left``)."""
    row = dict(item)
    row.setdefault("ttl_left", row.pop("ttl", -1))
    return row


def run_row(rec: Any) -> dict[str, Any]:
    return {"job": rec.job, "occurrence": rec.occurrence, "status": rec.status,
            "worker": rec.worker, "attempt": max(rec.attempt, len(rec.attempts)),
            "started_at": rec.started_at or None, "duration": duration(rec),
            "exit_code": rec.exit_code, "note": rec.note}


def spec_rows(spec: Any) -> list[tuple[str, str]]:
    """The spec as (field, text) rows, every field a user can set, in the file's order."""
    data = json.loads(spec.to_json())
    rows = []
    for key, value in data.items():
        if key == "name":
            continue
        if isinstance(value, Mapping):
            text = tags_text(value) if key == "tags" else ", ".join(
                f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list | tuple):
            text = " ".join(str(v) for v in value) if key == "command" else ", ".join(
                str(v) for v in value)
        else:
            text = "" if value is None else str(value)
        rows.append((key, text))
    return rows


def _query(request: web.Request, name: str) -> str:
    return request.query.get(name, "").strip()


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = _query(request, name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"{name} must be a whole number, not {raw!r}") from None
    if not lo <= value <= hi:
        raise BadInput(f"{name} must be between {lo} and {hi}, not {value}")
    return value


def _link(path: str, params: Iterable[tuple[str, object]]) -> str:
    kept = [(k, v) for k, v in params if v not in ("", None)]
    return f"{path}?{urlencode(kept)}" if kept else path


# --------------------------------------------------------------------------- pages


@page("locks")
async def locks_page(request: web.Request) -> web.Response:
    """Who holds each job's lock, TTL counting down, updated live."""
    rows = [lock_row(r) for r in await admin.locks(request.app[CLIENT]) if "worker" in r]
    return render(request, "locks.html", page="locks", section="locks", topics="locks",
                  locks=rows)


@page("workers")
async def workers_page(request: web.Request) -> web.Response:
    rows = await admin.workers(request.app[CLIENT])
    return render(request, "workers.html", page="workers", section="workers", workers=rows)


@page("cluster")
async def cluster_page(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    members = await cluster_members(client)
    status = await cluster_status(client)
    ok = [row for row in status if not row.get("error")]
    leaders = {row["leader_id"] for row in ok}
    leader = next(iter(leaders)) if len(leaders) == 1 else None
    names = {m["id"]: m["name"] for m in members}
    cluster = {"healthy": bool(status) and len(ok) == len(status),
               "leader": leader, "leader_name": names.get(leader or ""),
               "raft_term": max((row["raft_term"] for row in ok), default=None)}
    member_columns = ["id", "name", "peer_urls", "client_urls", "learner"]
    status_columns = ["endpoint", "id", "name", "leader", "raft_term", "raft_index",
                      "applied_index", "version", "db_size", "error"]
    return render(
        request, "cluster.html", page="cluster", section="cluster", cluster=cluster,
        member_columns=member_columns, status_columns=status_columns,
        member_rows=[[m.get(c, "") for c in member_columns] for m in members],
        status_rows=[[r.get(c, "") for c in status_columns] for r in status],
        endpoints=request.app[SETTINGS].endpoints)


@page("jobs")
async def job_page(request: web.Request) -> web.Response:
    """One job: spec, next fires in its zone (DST marked), what runs now, recent runs,
    and the action buttons."""
    name = request.match_info["name"]
    client = request.app[CLIENT]
    if not await admin.job_exists(client, name):
        raise NotFound(f"no job named {name!r}")
    try:
        spec, _ = await admin.get_job(client, name)
    except AdminError:
        spec = None  # deleted (its runs and lock may still be there) or invalid
    runtime = await suspension.read_one(client, name)
    runs = [run_row(r) for r in await admin.history(client, name, limit=RUNS_SHOWN)]
    held = [lock_row(r) for r in await admin.locks(client)
            if r.get("job") == name and "worker" in r]
    fires = next_fires(spec.timetable(), datetime.now(UTC)) if spec else []
    suspended = runtime is not None or bool(spec and spec.suspend)
    reason = runtime.reason if runtime else ("suspend: true in its spec" if suspended else "")
    return render(
        request, "job.html", page="job", section="jobs", topics="runs,jobs,locks",
        live_job=name, name=name, deleted=spec is None,
        spec_rows=spec_rows(spec) if spec else [],
        timezone=spec.timezone if spec else "UTC", next_fires=fires, runs=runs,
        locks=held, suspended=suspended, reason=reason,
        suspension=runtime.to_json() if runtime else None)


@page("jobs")
async def run_page(request: web.Request) -> web.Response:
    """One run: its record, attempts and output (live while it runs)."""
    job, occurrence = request.match_info["job"], request.match_info["occurrence"]
    try:
        rec = await admin.run_record(request.app[CLIENT], job, occurrence)
    except AdminError as err:
        raise NotFound(str(err)) from None
    record_rows = [
        ("status", rec.status), ("worker", rec.worker), ("host", rec.host),
        ("pid", str(rec.pid or "")), ("attempt", str(max(rec.attempt, len(rec.attempts)))),
        ("fencing_token", str(rec.fencing_token)),
        ("claimed_at", when(rec.claimed_at)), ("started_at", when(rec.started_at)),
        ("finished_at", when(rec.finished_at)),
        ("exit_code", "" if rec.exit_code is None else str(rec.exit_code)),
        ("note", rec.note)]
    attempts = [attempt_json(a) for a in attempts_of(rec)]
    response = render(
        request, "run.html", page="run", section="jobs", topics="runs",
        live_job=job, live_occurrence=rec.occurrence, job=job, occurrence=rec.occurrence, run=rec,
        record_rows=record_rows, attempts=attempts, output=rec.output_tail,
        active=rec.status in ACTIVE)
    return response


async def _not_found_job(request: web.Request) -> web.Response:
    return _error(request, "jobs", 404, "Not found", "no such page")


def add_routes(app: web.Application) -> None:
    """Register the page routes and the static assets on ``app``."""
    app.router.add_get("/locks", locks_page)
    app.router.add_get("/workers", workers_page)
    app.router.add_get("/cluster", cluster_page)
    app.router.add_get("/jobs/{name}", job_page)
    app.router.add_get("/runs/{job}/{occurrence}", run_page)
    app.router.add_static("/static/", STATIC, append_version=False)
