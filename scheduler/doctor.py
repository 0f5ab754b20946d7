"""`raftcron doctor`: what an operator would check by hand, each finding with what to do.

Checks: every member answers (quorum, one leader all agree on, applied index lag, database
size), free disk under a local data dir, live workers and the clock skew between them, jobs
no live worker may run, and jobs with no recent success (overdue).

Clock skew is inferred from what workers write with their own wall clock, ordered by the
store: the registration (``/cron/workers/<w>``: ``started_at``, at its create revision),
each lock (``started_at`` at its create revision) and each job's newest run record
(``finished_at`` / ``started_at`` / ``claimed_at`` at its mod revision). A write at a later
revision happened later, so a time reported *earlier* than one reported at an earlier
revision by more than the allowed skew means the two clocks differ by at least that much;
a reported time ahead of this command's clock at read means that writer's clock is ahead.
Both are lower bounds: a worker that has written nothing recently cannot be judged.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coord.client import Client, ClientError
from scheduler import keys
from scheduler.claim import ACTIVE, LockHolder, RunRecord
from scheduler.decode import BadValue, json_object
from scheduler.eligibility import ineligible_reason
from scheduler.joblist import list_jobs, scan
from scheduler.spec import JobSpec
from scheduler.suspension import read_all

QUOTA_BYTES = 2 * 1024**3
"""etcd's default backend quota (--quota-backend-bytes): writes stop at it."""


@dataclass
class Finding:
    check: str
    level: str  # "ok", "warn" or "bad"
    message: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Options:
    data_dir: Path | None = None
    max_skew: float = 5.0
    max_lag: int = 1000
    overdue_periods: float = 3.0
    min_free_fraction: float = 0.1
    min_free_bytes: int = 1024**3


@dataclass
class JobRuns:
    """What the doctor needs of one job's run records (read in one paged scan)."""

    newest_revision: int = 0
    newest: RunRecord | None = None
    last_success: float = 0.0
    first_seen: float = 0.0  # the earliest claim among the kept records


async def runs_by_job(client: Client) -> dict[str, JobRuns]:
    out: dict[str, JobRuns] = {}
    async for _, kv in scan(client, keys.RUNS.encode()):
        try:
            rec = RunRecord.decode(kv.value)
        except (ValueError, TypeError):
            continue
        j = out.setdefault(rec.job, JobRuns())
        if kv.mod_revision > j.newest_revision:
            j.newest_revision, j.newest = kv.mod_revision, rec
        if rec.status == "succeeded" and _is_time(rec.finished_at):
            j.last_success = max(j.last_success, rec.finished_at)
        begun = rec.claimed_at or rec.started_at
        if _is_time(begun):
            j.first_seen = min(j.first_seen or begun, begun)
    return out


async def diagnose(client: Client, opts: Options) -> list[Finding]:
    out: list[Finding] = []
    await members(client, opts, out)
    if opts.data_dir is not None:
        disk(opts.data_dir, opts, out)
    try:
        runs = await runs_by_job(client)
        live = await workers_and_skew(client, runs, opts, out)
        await jobs(client, live, runs, opts, out)
    except ClientError as err:
        out.append(Finding("store", "bad", f"the store does not answer reads: {err}",
                           "restore quorum first (see the member findings)"))
    return out


# ---------------------------------------------------------------------- members


async def members(client: Client, opts: Options, out: list[Finding]) -> None:
    try:
        listed = [(m.name or f"{m.id:x}", m.id, list(m.client_urls))
                  for m in await client.members()]
    except ClientError as err:
        out.append(Finding("members", "bad", f"cannot list the members: {err}",
                           "no member reachable through --endpoints answers; start them "
                           "or point --endpoints at a live member"))
        return
    answers: dict[str, Any] = {}
    for name, _mid, urls in listed:
        if not urls:
            out.append(Finding("members", "bad", f"member {name} has not started "
                               "(no client URL yet)", "start it with the cluster's "
                               "--initial-cluster, or remove it: raftcron cluster remove"))
            continue
        try:
            answers[name] = await client.status(urls[0])
        except ClientError as err:
            out.append(Finding("members", "bad", f"member {name} ({urls[0]}) does not "
                               f"answer: {err}", "check its process and host (logs, "
                               "disk, network); restart it with its data dir"))
    n, up = len(listed), len(answers)
    need = n // 2 + 1
    if up < need:
        out.append(Finding("quorum", "bad", f"no quorum: {up} of {n} members answer, "
                           f"{need} needed", "bring members back until a majority runs; "
                           "no write (no run) happens until then"))
    else:
        out.append(Finding("quorum", "ok", f"{up} of {n} members answer ({need} needed)"))
    ids = {mid: name for name, mid, _ in listed}
    leaders = {s.leader for s in answers.values()}
    if answers and (0 in leaders or len(leaders) != 1):
        seen = ", ".join(f"{name}: {ids.get(s.leader, 'none') if s.leader else 'none'}"
                         for name, s in answers.items())
        out.append(Finding("leader", "bad", f"members disagree on a leader or have none "
                           f"({seen})", "wait a few seconds for an election; if it "
                           "persists, check the peer network between members"))
    elif answers:
        out.append(Finding("leader", "ok", f"leader {ids.get(leaders.pop(), '?')}"))
    if answers:
        top = max(s.raft_applied_index for s in answers.values())
        worst = max(top - s.raft_applied_index for s in answers.values())
        if worst <= opts.max_lag:
            out.append(Finding("lag", "ok", f"every member that answers is within {worst} "
                               f"entries of the newest applied index {top}"))
        sizes = ", ".join(f"{name} {s.db_size / 1024**2:.1f} MiB"
                          for name, s in answers.items())
        out.append(Finding("db_size", "ok" if all(s.db_size <= 0.8 * QUOTA_BYTES
                                                  for s in answers.values()) else "warn",
                           f"database sizes: {sizes} (etcd's default quota 2 GiB)"))
        for name, s in answers.items():
            lag = top - s.raft_applied_index
            if lag > opts.max_lag:
                out.append(Finding("lag", "bad", f"member {name} is {lag} entries behind "
                                   f"(applied {s.raft_applied_index} of {top})",
                                   "check its disk and peer network; it catches up or "
                                   "receives a snapshot"))
            if s.db_size > 0.8 * QUOTA_BYTES:
                out.append(Finding("db_size", "warn", f"member {name}'s database is "
                                   f"{s.db_size} bytes, over 80% of the 2 GiB quota",
                                   "lower history_limit or compact, then defragment "
                                   "(etcdctl defrag)"))


def disk(data_dir: Path, opts: Options, out: list[Finding]) -> None:
    try:
        usage = shutil.disk_usage(data_dir)
    except OSError as err:
        out.append(Finding("disk", "bad", f"cannot read {data_dir}: {err.strerror}",
                           "give --data-dir of this host's member"))
        return
    free = usage.free / usage.total if usage.total else 0.0
    text = f"{usage.free // 1024**2} MiB free ({free:.0%}) under {data_dir}"
    if free < opts.min_free_fraction or usage.free < opts.min_free_bytes:
        out.append(Finding("disk", "bad", text, "free space on that filesystem: a full "
                           "disk stops the member's writes"))
    else:
        out.append(Finding("disk", "ok", text))


# ---------------------------------------------------------------------- workers


@dataclass
class Stamp:
    revision: int
    worker: str
    reported: float
    what: str


async def workers_and_skew(client: Client, runs: dict[str, JobRuns], opts: Options,
                           out: list[Finding]) -> dict[str, dict[str, str]]:
    now = time.time()
    stamps: list[Stamp] = []
    live: dict[str, dict[str, str]] = {}
    async for _, kv in scan(client, keys.WORKERS.encode()):
        name = keys.name_from(kv.key, keys.WORKERS)
        try:
            info = json_object(kv.value)
        except BadValue:
            info = {}
        tags = info.get("tags")
        live[name] = tags if isinstance(tags, dict) else {}
        if _is_time(info.get("started_at")):
            stamps.append(Stamp(kv.create_revision, name, float(info["started_at"]),
                                "registered"))
    async for _, kv in scan(client, keys.LOCKS.encode()):
        try:
            h = LockHolder.decode(kv.value)
        except (ValueError, TypeError):
            continue
        if _is_time(h.started_at):
            stamps.append(Stamp(kv.create_revision, h.worker, h.started_at, "claimed"))
    for j in runs.values():
        rev, rec = j.newest_revision, j.newest
        if rec is None:
            continue
        t = (rec.finished_at if rec.status not in ACTIVE else 0.0) or rec.started_at \
            or rec.claimed_at
        if rec.worker and _is_time(t):
            stamps.append(Stamp(rev, rec.worker, float(t), f"wrote run {rec.occurrence}"))
    if not live:
        out.append(Finding("workers", "bad", "no live workers: no job runs",
                           "start agents or workers against this store"))
    else:
        out.append(Finding("workers", "ok", f"{len(live)} live: {', '.join(sorted(live))}"))
    skewed = skew(stamps, now, opts.max_skew)
    out.extend(skewed)
    if live and not skewed:
        out.append(Finding("clock_skew", "ok", f"no skew over {opts.max_skew:g}s seen in "
                           f"{len(stamps)} worker timestamps"))
    return live


def skew(stamps: list[Stamp], now: float, allowed: float) -> list[Finding]:
    """Findings for clocks provably apart by more than ``allowed`` seconds (see above)."""
    found: dict[tuple[str, str], float] = {}
    fix = ("run NTP/chrony on every worker host (chronyc tracking); a clock ahead fires "
           "jobs early, one behind fires them late")
    for s in stamps:
        ahead = s.reported - now
        if ahead > allowed:
            found[(s.worker, "")] = max(found.get((s.worker, ""), 0.0), ahead)
    ordered = sorted(stamps, key=lambda s: s.revision)
    latest: Stamp | None = None  # the highest reported time so far, in revision order
    for s in ordered:
        if latest is not None and latest.worker != s.worker:
            gap = latest.reported - s.reported
            if gap > allowed:
                pair = (latest.worker, s.worker)
                found[pair] = max(found.get(pair, 0.0), gap)
        if latest is None or s.reported > latest.reported:
            latest = s
    out = []
    for (a, b), gap in sorted(found.items()):
        if not b:
            out.append(Finding("clock_skew", "bad", f"worker {a}'s clock is at least "
                               f"{gap:.1f}s ahead of this host's", fix))
        else:
            out.append(Finding("clock_skew", "bad", f"workers {a} and {b}: clocks at least "
                               f"{gap:.1f}s apart ({a} ahead or {b} behind)", fix))
    return out


def _is_time(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and 0 < value < 1e11)


# ---------------------------------------------------------------------- jobs


async def jobs(client: Client, live: dict[str, dict[str, str]], runs: dict[str, JobRuns],
               opts: Options, out: list[Finding]) -> None:
    paused = await read_all(client)
    bad = 0
    entries = await list_jobs(client, with_last=False)
    for e in entries:
        spec = e.spec
        if spec is None:
            out.append(Finding("jobs", "bad", f"job {e.name}: its stored spec is unreadable",
                               f"apply it again: raftcron apply -f <file> ({e.name})"))
            bad += 1
            continue
        if spec.suspend or e.name in paused:
            continue
        why = ineligible_reason(spec.tags, live)
        if why is not None:
            out.append(Finding("eligibility", "bad", f"job {e.name}: {why}",
                               "start a worker with matching --tags, or change the job's "
                               "tags and apply it"))
            bad += 1
        window = _window(spec, opts)
        if window is None:
            continue
        kept = runs.get(e.name, JobRuns())
        ok_at = kept.last_success
        since = ok_at or kept.first_seen
        if since and time.time() - since > window:
            last = (f"last success {_iso(ok_at)}" if ok_at
                    else f"no success since {_iso(since)}")
            out.append(Finding("overdue", "bad", f"job {e.name}: {last}, over "
                               f"{window:g}s ago", f"see `raftcron jobs history {e.name}` "
                               f"and `raftcron jobs logs {e.name}`"))
            bad += 1
    if entries and not bad:
        out.append(Finding("jobs", "ok", f"{len(entries)} jobs: each has an eligible "
                           "worker and none is overdue"))


def _window(spec: JobSpec, opts: Options) -> float | None:
    """Seconds without a success after which a job is overdue: its ``expect:
    succeed_within`` if it has one, else ``overdue_periods`` times its period."""
    if spec.expect:  # JobSpec.expect: succeed_within, in seconds
        return float(spec.expect)
    tt = spec.timetable()
    first = tt.next_after(datetime.now(UTC))
    second = tt.next_after(first) if first is not None else None
    if first is None or second is None:
        return None
    return float(opts.overdue_periods * (second - first).total_seconds())


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
