"""The read side of the JSON API under ``/api/v1/`` (docs/api.md).

Lists (jobs, locks, overview) come from the read model; one job's runs, one run's record
and output, the workers and the cluster are read from the store when asked, through the
functions the CLI uses (:mod:`scheduler.admin`, :mod:`scheduler.clusterview`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from coord.aiotools import within
from coord.client import ClientError
from scheduler import admin, keys
from scheduler.claim import ACTIVE
from scheduler.cliviews import run_json
from scheduler.clusterview import cluster_members, cluster_status
from scheduler.dashboard.context import CLIENT, MODEL
from scheduler.dashboard.errors import ApiError, bad_request, not_found
from scheduler.dashboard.model import JobRow, ReadModel, iso
from scheduler.decode import BadValue, json_object
from scheduler.output_stream import output_key
from scheduler.plan import normalize_occurrence

PREFIX: Final = "/api/v1"
LIMIT_DEFAULT: Final = 50
LIMIT_MAX: Final = 500
NEXT_FIRES: Final = 10
RECENT_RUNS: Final = 20
READY_WAIT: Final = 10.0
"""Seconds a request waits for the model's first read of the store before a 503."""
OVERDUE_GRACE: Final = 60.0
"""Seconds past a due instant without a run before the overview calls a job overdue."""
FAILED: Final = frozenset({"failed", "timeout", "killed", "lost"})
STATUSES: Final = frozenset({"claimed", "running", "succeeded", "failed", "timeout", "killed",
                             "lost", "missed", "skipped", "retrying", "never"})
"""Values of the jobs list's ``status`` filter: a last run's outcome, ``running`` or
``never``."""


async def ready_model(request: web.Request) -> ReadModel:
    model = request.app[MODEL]
    if not await model.wait_ready(READY_WAIT):
        why = f": {model.last_error}" if model.last_error else " (is it reachable?)"
        raise ApiError(503, "the dashboard has not read the store yet" + why)
    return model


def job_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not keys.valid_job(name):
        raise bad_request(f"{name!r} is not a valid job name (letters, digits, '_', '.', "
                          "'-', starting with a letter or digit, at most 128)")
    return name


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer from {lo} to {hi}, not {raw!r}") \
            from None
    if not lo <= value <= hi:
        raise bad_request(f"{name} must be from {lo} to {hi}, not {value}")
    return value


def _bool_param(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name, "").lower()
    if raw == "":
        return None
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no"):
        return False
    raise bad_request(f"{name} must be true or false, not {raw!r}")


# ---------------------------------------------------------------------------- jobs


def _matcher(model: ReadModel, request: web.Request) -> Any:
    """The jobs filter of the query (None: no filter), or a 400 for a bad value."""
    q = request.query.get("q", "").strip().lower()
    tag = request.query.get("tag", "").strip()
    status = request.query.get("status", "").strip()
    suspended = _bool_param(request, "suspended")
    if status and status not in STATUSES:
        raise bad_request(f"status must be one of {', '.join(sorted(STATUSES))}, "
                          f"not {status!r}")
    tag_key, has_value, tag_value = tag.partition("=")
    if tag and not tag_key:
        raise bad_request(f"tag must be KEY or KEY=VALUE, not {tag!r}")
    if not (q or tag or status or suspended is not None):
        return None

    def match(row: JobRow) -> bool:
        if q and q not in row.name.lower():
            return False
        if tag:
            tags = row.spec.tags if row.spec is not None else {}
            if tag_key not in tags or (has_value and tags[tag_key] != tag_value):
                return False
        if status and model.status_of(row.name) != status:
            return False
        return suspended is None or (model.suspension_json(row) is not None) == suspended
    return match


async def get_jobs(request: web.Request) -> web.Response:
    """A page of the jobs, sorted by name, filtered by name (``q``), tag, status and
    suspension: a slice of the model, O(page) without a filter, one pass with one."""
    model = await ready_model(request)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    limit = _int_param(request, "limit", LIMIT_DEFAULT, 1, LIMIT_MAX)
    match = _matcher(model, request)
    jobs = model.jobs
    if match is None:
        total = len(jobs)
        rows = [jobs[name] for name in jobs.islice(offset, offset + limit)]
    else:
        found = [row for row in jobs.values() if match(row)]
        total, rows = len(found), found[offset:offset + limit]
    now = datetime.now(UTC)
    return web.json_response({"jobs": [model.job_json(r, now) for r in rows],
                              "total": total, "offset": offset, "limit": limit,
                              "revision": model.revision})


def next_fires(row: JobRow, now: datetime, count: int) -> list[dict[str, Any]]:
    """The next ``count`` fire instants: UTC, the job's wall time, its UTC offset, and
    ``dst`` true on the first fire after a change of offset (a DST transition)."""
    if row.spec is None:
        return []
    tt = row.spec.timetable()
    zone = tt.zone
    out: list[dict[str, Any]] = []
    offset = now.astimezone(zone).utcoffset()
    for at in tt.iter_after(now):
        if len(out) >= count:
            break
        local = at.astimezone(zone)
        changed = local.utcoffset() != offset
        offset = local.utcoffset()
        out.append({"at": iso(at), "local": iso(local), "dst": changed,
                    "utc_offset": local.strftime("%z")})
    return out


async def get_job(request: web.Request) -> web.Response:
    """One job: spec, suspension, next 10 fires, lock, recent runs (full records, from the
    store). A deleted job that still has history or runs is answered with ``spec: null``."""
    name = job_name(request)
    model = await ready_model(request)
    client = request.app[CLIENT]
    row = model.jobs.get(name)
    records = await admin.history(client, name, limit=RECENT_RUNS)
    lock = model.locks.get(name)
    if row is None and not records and lock is None:
        raise not_found(f"no job named {name!r}")
    now = datetime.now(UTC)
    body: dict[str, Any] = {"name": name, "deleted": row is None}
    if row is not None:
        body.update(model.job_json(row, now))
        body["spec"] = row.spec.to_dict() if row.spec is not None else None
        # Shown while suspended too (when it would fire once resumed); ``next_fire`` is
        # null then, as the job does not fire.
        body["next_fires"] = next_fires(row, now, NEXT_FIRES)
    else:
        body.update(spec=None, next_fires=[], suspended=False, reason=None,
                    suspension=None)
    body["lock"] = lock.to_json(await model.ttl_left(lock.lease)) if lock else None
    body["runs"] = [run_json(r) for r in records]
    return web.json_response(body)


# ---------------------------------------------------------------------------- runs


async def get_run(request: web.Request) -> web.Response:
    """One run's record and its output: the live tail while it runs (the worker publishes
    it every half second), else the stored tail of its last attempt."""
    name = job_name(request)
    raw = request.match_info["occurrence"]
    try:
        occ = normalize_occurrence(raw)
    except ValueError as err:
        raise bad_request(f"{raw!r} is not an occurrence id: {err}") from None
    client = request.app[CLIENT]
    try:
        rec = await admin.run_record(client, name, occ)
    except admin.AdminError as err:
        raise not_found(str(err)) from None
    body = run_json(rec)
    body["output"] = rec.output_tail
    body["output_live"] = False
    if rec.status in ACTIVE:
        kv = await client.get_one(output_key(name, occ))
        if kv is not None:
            try:
                live = json_object(kv.value)
            except BadValue:
                live = {}
            if isinstance(live.get("tail"), str):
                body["output"], body["output_live"] = live["tail"], True
    return web.json_response(body)


# ---------------------------------------------------------------------------- the rest


async def get_locks(request: web.Request) -> web.Response:
    model = await ready_model(request)
    return web.json_response({"locks": await model.locks_json()})


async def get_workers(request: web.Request) -> web.Response:
    """Live workers (registered on their session lease) with their lease TTL left."""
    rows = await admin.workers(request.app[CLIENT])
    return web.json_response({"workers": rows})


async def cluster_view(client: Any) -> dict[str, Any]:
    members = await cluster_members(client)
    status = await cluster_status(client)
    answered = [row for row in status if not row.get("error")]
    leaders = {row["leader_id"] for row in answered}
    return {
        "members": members, "status": status,
        "leader": next(iter(leaders)) if len(leaders) == 1 else None,
        "raft_term": max((row["raft_term"] for row in answered), default=None),
        "healthy": bool(status) and len(answered) == len(status) and len(leaders) == 1,
    }


async def get_cluster(request: web.Request) -> web.Response:
    """Members and each member's status (leader, term, indexes)."""
    return web.json_response(await cluster_view(request.app[CLIENT]))


async def get_overview(request: web.Request) -> web.Response:
    """Cluster health, workers alive, runs of the last hour by outcome, jobs failing or
    overdue, what runs now."""
    model = await ready_model(request)
    try:
        cluster: dict[str, Any] = await within(
            cluster_view(request.app[CLIENT]), READY_WAIT)
    except (ClientError, TimeoutError) as err:
        cluster = {"healthy": False, "error": str(err) or "the store did not answer"}
    now = datetime.now(UTC)
    hour_ago = now.timestamp() - 3600
    by_outcome: dict[str, int] = dict.fromkeys(("succeeded", "failed", "timeout", "killed",
                                                "lost", "missed", "skipped"), 0)
    for per_job in model.runs.values():
        for rec in per_job.values():
            if rec.status not in ACTIVE and (rec.finished_at or rec.claimed_at) >= hour_ago:
                by_outcome[rec.status] = by_outcome.get(rec.status, 0) + 1
    failing = [{"job": name, **(model.last_run_json(name) or {})}
               for name, rec in model.last.items()
               if rec.status in FAILED and name in model.jobs]
    overdue = []
    for row in model.jobs.values():
        due = model.overdue(row, now, OVERDUE_GRACE)
        if due is not None:
            overdue.append({"job": row.name, "due": iso(due),
                            "late_s": round((now - due).total_seconds(), 1)})
    running = [{"job": rec.job, "occurrence": rec.occurrence, "status": rec.status,
                "worker": rec.worker, "attempt": rec.attempt,
                "started_at": run_json(rec)["started_at"]}
               for rec in model.running(now)]
    return web.json_response({
        "cluster": cluster, "workers_alive": len(model.workers), "jobs": len(model.jobs),
        "runs_last_hour": by_outcome, "failing": sorted(failing, key=lambda f: f["job"]),
        "overdue": overdue, "running": running, "locks_held": len(model.locks),
    })


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(f"{PREFIX}/overview", get_overview)
    r.add_get(f"{PREFIX}/jobs", get_jobs)
    r.add_get(f"{PREFIX}/jobs/{{name}}", get_job)
    r.add_get(f"{PREFIX}/locks", get_locks)
    r.add_get(f"{PREFIX}/runs/{{name}}/{{occurrence}}", get_run)
    r.add_get(f"{PREFIX}/workers", get_workers)
    r.add_get(f"{PREFIX}/cluster", get_cluster)
