"""The raftcron command line (typer). Every command has --help with an example."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import structlog
import typer

from coord.logsetup import configure as configure_logging
from coord.server import config as store_config

log = structlog.get_logger("raftcron")

SWITCH_INTERVAL = 0.0005
"""Seconds a thread may hold the GIL while another waits for it, in `raftcron worker`."""

# Plain help (rich_markup_mode=None): typer's rich help shows every flag, --help included,
# with a bogus `<bool>` value. --install-completion / --show-completion come from typer.
app = typer.Typer(
    name="raftcron",
    help="A distributed cron scheduler on an embedded, Raft-replicated, etcd-compatible store.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,  # an unexpected error is a plain traceback, not a box
)
coord_app = typer.Typer(help="Run or inspect a coord store member.", no_args_is_help=True,
                        rich_markup_mode=None)
app.add_typer(coord_app, name="coord")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"raftcron {version('raftcron')}")
        except PackageNotFoundError:
            from scheduler.worker import VERSION

            typer.echo(f"raftcron {VERSION}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Print raftcron's version and exit.")] = False) -> None:
    """A distributed cron scheduler on an embedded, Raft-replicated, etcd-compatible store."""

# The store flags: one definition (option and default) for `coord serve` and `agent`, whose
# store is the same member; the defaults are coord.server.config's.
NameOpt = Annotated[str, typer.Option("--name", help="Member name, unique in the cluster "
                                      "(an agent's worker has the same name).",
                                      show_default="the host name")]
DataDirOpt = Annotated[Path, typer.Option("--data-dir", help="Where the WAL and snapshots live.")]
ClientOpt = Annotated[str, typer.Option("--listen-client",
                                        help="HOST:PORT for etcd-v3 clients (etcdctl, workers).")]
PeerOpt = Annotated[str, typer.Option("--listen-peer", help="HOST:PORT for Raft peer traffic.")]
ClusterOpt = Annotated[str | None, typer.Option(
    "--initial-cluster", help="NAME=HOST:PORT,... of every member's peer address "
    "(default: this member alone).")]
ClusterStateOpt = Annotated[str, typer.Option(
    "--initial-cluster-state",
    help="'new' bootstraps a cluster from --initial-cluster; 'existing' joins a running "
    "cluster after `etcdctl member add`.")]
SnapshotCountOpt = Annotated[int, typer.Option(
    "--snapshot-count", help="Applied entries between snapshots (log compaction).")]
SnapshotBytesOpt = Annotated[int, typer.Option(
    "--snapshot-bytes", help="Also snapshot once the entries applied since the last "
    "snapshot hold this many bytes (or the last snapshot's size, if larger).")]
DEFAULT_NAME = ""  # the host name
DEFAULT_DATA_DIR = Path("raftcron-data")
DEFAULT_CLIENT = store_config.DEFAULT_CLIENT
DEFAULT_PEER = store_config.DEFAULT_PEER
DEFAULT_CLUSTER_STATE = store_config.ServerConfig.initial_cluster_state
DEFAULT_SNAPSHOT_COUNT = store_config.ServerConfig.snapshot_count
DEFAULT_SNAPSHOT_BYTES = store_config.ServerConfig.snapshot_bytes


def store_config_from_flags(name: str, data_dir: Path, listen_client: str, listen_peer: str,
                            initial_cluster: str | None, initial_cluster_state: str,
                            snapshot_count: int, snapshot_bytes: int) -> Any:
    """The member's ServerConfig from the store flags (``coord serve`` and ``agent``); a
    bad flag is exit 2, before anything touches the data dir."""
    try:
        cluster = (store_config.parse_initial_cluster(initial_cluster)
                   if initial_cluster else {})
        return store_config.ServerConfig(
            name=name or socket.gethostname(), data_dir=data_dir, listen_client=listen_client,
            listen_peer=listen_peer, initial_cluster=cluster,
            initial_cluster_state=initial_cluster_state, snapshot_count=snapshot_count,
            snapshot_bytes=snapshot_bytes)
    except store_config.ConfigError as err:
        fail(str(err), 2)


StopTimeoutOpt = Annotated[float, typer.Option(
    "--stop-timeout", help="Seconds a graceful stop (SIGINT/SIGTERM) waits for running jobs "
    "before killing them; a second signal stops at once.")]


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


STOP_NOW_EXIT = 130
"""Exit status after a second SIGINT/SIGTERM cut a graceful stop short (README, CLI)."""


def data_dir_failure(data_dir: Path, err: Exception) -> str:
    """The one line a server prints when its data dir stops it (exit 3)."""
    from coord.storage import DataDirError

    if isinstance(err, DataDirError):
        return str(err)
    return f"cannot recover data dir {data_dir}: {err}"


def run_until_signal(make_main: object) -> None:
    """Run an async ``main(stop_event)`` until SIGINT/SIGTERM.

    The first signal sets the stop event: ``main`` stops gracefully (a worker lets its
    running jobs finish, up to its --stop-timeout). A second signal cancels ``main`` at
    once, whatever state it is in, and the process exits with status 130.
    """
    cut_short = False

    async def runner() -> None:
        nonlocal cut_short
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        main = asyncio.ensure_future(make_main(stop))  # type: ignore[operator]

        def on_signal(sig: signal.Signals) -> None:
            nonlocal cut_short
            if not stop.is_set():
                log.info("process.stopping", signal=sig.name,
                         hint="send it again to stop at once")
                stop.set()
            elif not cut_short:
                log.warning("process.stopping_now", signal=sig.name)
                cut_short = True
                main.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            await main
        except asyncio.CancelledError:
            if not cut_short:
                raise

    asyncio.run(runner())
    if cut_short:
        raise typer.Exit(STOP_NOW_EXIT)


@coord_app.command("serve")
def coord_serve(
    name: NameOpt = DEFAULT_NAME,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    listen_client: ClientOpt = DEFAULT_CLIENT,
    listen_peer: PeerOpt = DEFAULT_PEER,
    initial_cluster: ClusterOpt = None,
    initial_cluster_state: ClusterStateOpt = DEFAULT_CLUSTER_STATE,
    snapshot_count: SnapshotCountOpt = DEFAULT_SNAPSHOT_COUNT,
    snapshot_bytes: SnapshotBytesOpt = DEFAULT_SNAPSHOT_BYTES,
) -> None:
    """Serve the etcd v3 API from a coord member (no scheduler worker).

    Example:  raftcron coord serve --name n1 --data-dir /var/lib/raftcron
    --listen-client 127.0.0.1:2379 --listen-peer 127.0.0.1:2380
    --initial-cluster n1=127.0.0.1:2380
    """
    from coord.process import gc_freeze_enabled, setup_process
    from coord.server.server import CoordServer
    from coord.storage import StorageError

    configure_logging()
    config = store_config_from_flags(name, data_dir, listen_client, listen_peer,
                                     initial_cluster, initial_cluster_state, snapshot_count,
                                     snapshot_bytes)
    try:
        setup_process()
        server = CoordServer(config, freeze_heap=gc_freeze_enabled())
        run_until_signal(server.serve_until)
    except StorageError as err:
        fail(data_dir_failure(data_dir, err), 3)
    except OSError as err:
        fail(str(err), 1)


# ---------------------------------------------------------------------------- client side
EndpointsOpt = Annotated[str, typer.Option(
    "--endpoints", envvar="RAFTCRON_ENDPOINTS",
    help="Comma-separated HOST:PORT of coord members or etcd servers.")]
OutputOpt = Annotated[str, typer.Option("-o", "--output", help="table or json.")]
TagsOpt = Annotated[str, typer.Option("--tags", help="k=v,... this worker offers to jobs.")]

jobs_app = typer.Typer(help="Inspect and control jobs.", no_args_is_help=True,
                       rich_markup_mode=None)
app.add_typer(jobs_app, name="jobs")


def parse_tags(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, sep, v = part.partition("=")
        if not sep or not k:
            fail(f"--tags: expected k=v,..., got {part!r}", 2)
        tags[k] = v
    return tags


def iso(t: datetime) -> str:
    """An instant as ISO 8601: to the second, or to the millisecond when it has a fraction
    (the fire instants of ``@every`` jobs)."""
    return t.isoformat(timespec="milliseconds" if t.microsecond else "seconds")


def check_output(output: str) -> None:
    if output not in ("table", "json"):
        fail(f"-o must be table or json, not {output!r}", 2)


def check_limit(limit: int) -> None:
    if limit < 1:
        fail(f"--limit must be at least 1, not {limit}", 2)


def client_call(endpoints: str, fn: Any) -> Any:
    """Run ``fn(client)`` against the endpoints; store errors become a clear exit 1."""
    from coord.client import Client, ClientError
    from scheduler.admin import AdminError
    from scheduler.cliviews import refused
    from scheduler.errors import SpecError

    why = refused(endpoints)
    if why is not None:  # nothing listens: say so now, not after the client's retries
        fail(f"cannot reach the store at {endpoints}: {why}")

    async def body() -> Any:
        async with Client(endpoints, timeout=5) as client:
            return await fn(client)
    try:
        return asyncio.run(body())
    except AdminError as err:
        fail(str(err))
    except SpecError as err:
        fail(str(err), 2)
    except ClientError as err:
        from scheduler.cli_errors import client_failure

        fail(client_failure(endpoints, err))


PLAIN_TABLE_OVER = 200
"""Tables with more rows than this print as plain aligned columns (fast), not rich's box."""


def emit(output: str, rows: list[dict[str, Any]], columns: list[str], title: str) -> None:
    if output == "json":
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo(f"{title}: none")
        return
    cells = [["" if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows]
    if len(rows) > PLAIN_TABLE_OVER:
        # rich lays out a table cell by cell (~1 ms a row): 20,000 jobs took 11-20 s. Plain
        # aligned columns print the same information at once.
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        lines = [f"{title} ({len(rows)})",
                 "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                  for r in cells]
        sys.stdout.write("\n".join(lines) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c)
    for r in cells:
        table.add_row(*r)
    # Off a terminal (pipes, CI logs) print wide rather than truncating cells.
    Console(width=None if sys.stdout.isatty() else 240).print(table)


SUMMARY_OVER = 50
"""Files with more jobs than this get a summary from validate and apply (unless --verbose)."""

SUMMARY_SHOWN = 20
"""Jobs (validate) or changes (apply) printed in full in a summary."""

VerboseOpt = Annotated[bool, typer.Option(
    "--verbose", "-v", help=f"Print every job or diff even beyond {SUMMARY_OVER} jobs.")]


@app.command("validate")
def validate(file: Annotated[Path, typer.Argument(help="The job file (YAML).")],
             verbose: VerboseOpt = False) -> None:
    """Check a job file; print every problem, or each job's next 5 fire times (the first
    few jobs only in a large file, unless --verbose).

    Example:  raftcron validate jobs.example.yaml
    """
    from scheduler.errors import SpecError
    from scheduler.spec import load_jobs

    try:
        specs = load_jobs(file, local_users=True)
    except SpecError as err:
        fail(str(err), 2)
        return
    now = datetime.now(UTC)
    shown = specs if verbose or len(specs) <= SUMMARY_OVER else specs[:SUMMARY_SHOWN]
    for spec in shown:
        tt = spec.timetable()
        state = " (suspended)" if spec.suspend else ""
        typer.echo(f"{spec.name}: {spec.schedule} [{spec.timezone}]{state}")
        t = now
        for _ in range(5):
            nxt = tt.next_after(t)
            if nxt is None:
                break
            local = nxt.astimezone(ZoneInfo(spec.timezone))
            typer.echo(f"    {iso(nxt)}    {iso(local)}")
            t = nxt
    if len(shown) < len(specs):
        typer.echo(f"... and {len(specs) - len(shown)} more job(s) (--verbose lists them all)")
    suspended = sum(1 for s in specs if s.suspend)
    typer.echo(f"{file}: {len(specs)} job(s) OK"
               + (f" ({suspended} suspended)" if suspended else ""))


@app.command("apply")
def apply(
    file: Annotated[Path, typer.Option("-f", "--file", help="The job file (YAML).")],
    endpoints: EndpointsOpt = "127.0.0.1:2379",
    prune: Annotated[bool, typer.Option("--prune", help="Delete stored jobs not in the file.")]
    = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the diff, write nothing.")]
    = False,
    verbose: VerboseOpt = False,
) -> None:
    """Store the jobs of FILE (compare-and-set) and print what changed (a summary with the
    first diffs when more than 50 jobs are involved, unless --verbose).

    Example:  raftcron apply -f jobs.yaml --prune --dry-run
    """
    from scheduler.admin import apply_jobs
    from scheduler.errors import SpecError
    from scheduler.spec import load_jobs

    try:
        specs = load_jobs(file)
    except SpecError as err:
        fail(str(err), 2)
        return
    plan = client_call(endpoints, lambda c: apply_jobs(c, specs, prune=prune, dry_run=dry_run))
    summary = not verbose and len(plan.changes) > SUMMARY_OVER
    printed = 0
    for ch in plan.changes:
        if summary and (ch.kind == "same" or printed >= SUMMARY_SHOWN):
            continue
        printed += ch.kind != "same"
        sign = {"add": "+", "change": "~", "delete": "-", "same": "="}[ch.kind]
        typer.echo(f"{sign} {ch.name}" + ("" if ch.kind == "same" else f" ({ch.kind})"))
        for line in ch.diff:
            typer.echo(f"      {line}")
    n = len(plan.effective)
    if summary and printed < n:
        kinds = {k: sum(1 for c in plan.effective if c.kind == k)
                 for k in ("add", "change", "delete")}
        typer.echo(f"... and {n - printed} more change(s) not shown ({kinds['add']} added, "
                   f"{kinds['change']} changed, {kinds['delete']} deleted in all; --verbose "
                   "prints every diff)")
    verb = "would change" if dry_run else "changed"
    tail = ""
    if dry_run:
        tail = " (dry run: nothing written)"
    elif plan.applied:
        tail = f"; applied in {plan.transactions} transaction(s)"
    typer.echo(f"{n} job(s) {verb}, {len(plan.changes) - n} unchanged{tail}")


@jobs_app.command("list")
def jobs_list(
    endpoints: EndpointsOpt = "127.0.0.1:2379",
    output: OutputOpt = "table",
    prefix: Annotated[str, typer.Option("--prefix", help="Only jobs whose name starts so.")]
    = "",
    tag: Annotated[list[str] | None, typer.Option(
        "--tag", help="Only jobs with this tag, as k=v (repeat: all must match).")] = None,
) -> None:
    """List stored jobs with their next fire time and last run (read in one pass).

    Example:  raftcron jobs list --prefix backup- --tag disk=ssd -o json
    """
    check_output(output)
    from scheduler.cliviews import suspension_text
    from scheduler.joblist import list_jobs
    from scheduler.suspension import read_all

    want: dict[str, str] = {}
    for t in tag or []:
        k, eq, v = t.partition("=")
        if not eq or not k:
            fail(f"--tag must be k=v, not {t!r}", 2)
        want[k] = v

    async def body(c: Any) -> list[dict[str, Any]]:
        paused = await read_all(c)
        live = await _live_tags(c)
        return [_job_row(e, paused, live)
                for e in await list_jobs(c, prefix=prefix, tags=want)]
    rows = client_call(endpoints, body)
    if output == "table":
        for row in rows:
            row["suspended"] = suspension_text(row.get("suspension")) or "no"
    emit(output, rows, ["name", "schedule", "timezone", "suspended", "next", "last", "workers"],
         "jobs")


async def _live_tags(c: Any) -> dict[str, dict[str, str]]:
    """Live workers → their tags (for "no eligible worker" reasons)."""
    from scheduler.admin import workers

    return {w["worker"]: w["tags"] if isinstance(w["tags"], dict) else {}
            for w in await workers(c)}


def _job_row(e: Any, paused: dict[str, Any], live: dict[str, dict[str, str]]) -> dict[str, Any]:
    """One `jobs list` row from a :class:`scheduler.joblist.JobEntry`, the runtime
    suspensions (``/cron/suspend/``) and the live workers' tags."""
    from scheduler.cliviews import suspension_json
    from scheduler.eligibility import ineligible_reason

    row: dict[str, Any] = {"name": e.name, "revision": e.revision}
    spec = e.spec
    if spec is None:
        row["schedule"] = "(unreadable spec)"
    else:
        nxt = spec.timetable().next_after(datetime.now(UTC))
        off = spec.suspend or e.name in paused
        row.update(schedule=spec.schedule, timezone=spec.timezone,
                   suspended=off, concurrency=spec.concurrency,
                   next=iso(nxt) if nxt and not off else None)
        row["suspension"] = suspension_json(spec.suspend, paused.get(e.name))
        row["workers"] = ineligible_reason(spec.tags, live) or "ok"
    row["last"] = f"{e.last.occurrence} {e.last.status}" if e.last else None
    return row


@jobs_app.command("show")
def jobs_show(name: str, endpoints: EndpointsOpt = "127.0.0.1:2379",
              output: OutputOpt = "table") -> None:
    """Show one job's spec, suspension, next fire times, lock and last run. A deleted job
    that still runs or has history is shown too (its spec as `deleted`).

    Example:  raftcron jobs show heartbeat
    """
    check_output(output)
    from coord.client import Client
    from scheduler import keys
    from scheduler.admin import get_job, history, locks, require_job
    from scheduler.cliviews import run_json, suspension_json, suspension_text
    from scheduler.eligibility import ineligible_reason
    from scheduler.suspension import read_one

    async def body(c: Client) -> dict[str, Any]:
        kv = await c.get_one(keys.job_key(name))
        held = [lk for lk in await locks(c) if lk["job"] == name]
        last = await history(c, name, limit=1)
        if kv is None:
            await require_job(c, name)
            return {"spec": None, "deleted": True, "revision": None, "next": [],
                    "suspension": None, "lock": held[0] if held else None,
                    "last_run": run_json(last[0]) if last else None}
        spec, rev = await get_job(c, name)
        paused = await read_one(c, name)
        fires: list[str] = []
        t = datetime.now(UTC)
        live = await _live_tags(c)
        tt = spec.timetable()
        for _ in range(0 if spec.suspend or paused else 5):
            nxt = tt.next_after(t)
            if nxt is None:
                break
            fires.append(iso(nxt))
            t = nxt
        return {"spec": spec.to_dict(), "deleted": False, "revision": rev, "next": fires,
                "suspension": suspension_json(spec.suspend, paused),
                "lock": held[0] if held else None,
                "last_run": run_json(last[0]) if last else None,
                "workers": ineligible_reason(spec.tags, live) or "ok"}
    info = client_call(endpoints, body)
    if output == "json":
        typer.echo(json.dumps(info, indent=2))
        return
    if info["spec"] is None:
        typer.echo(f"{'name':18} {name}")
        typer.echo(f"{'spec':18} deleted (history and running runs remain)")
    else:
        for k, v in info["spec"].items():
            typer.echo(f"{k:18} {v}")
        typer.echo(f"{'revision':18} {info['revision']}")
        typer.echo(f"{'suspended':18} {suspension_text(info['suspension']) or 'no'}")
        typer.echo("next fires (UTC):  " + (", ".join(info["next"]) or "none"))
    typer.echo(f"{'lock':18} {info['lock'] or 'free'}")
    if info.get("workers"):
        typer.echo(f"{'workers':18} {info['workers']}")
    last = info["last_run"]
    typer.echo(f"{'last run':18} " + (f"{last['occurrence']} {last['status']} "
                                      f"(attempt {last['attempt']})" if last else "none"))


LimitOpt = Annotated[int, typer.Option("--limit", help="How many runs, newest first (≥ 1).")]


@jobs_app.command("history")
def jobs_history(name: str, endpoints: EndpointsOpt = "127.0.0.1:2379",
                 output: OutputOpt = "table", limit: LimitOpt = 20) -> None:
    """Recent runs of a job, newest first: every attempt (how each ended) and the duration
    from the first start to the end. `-o json` lists each attempt's start, end, exit code,
    status and log path. Works for a deleted job while its history remains.

    Example:  raftcron jobs history heartbeat --limit 5
    """
    check_output(output)
    check_limit(limit)
    from scheduler.admin import history, require_job
    from scheduler.cliviews import history_row, run_json

    async def body(c: Any) -> list[Any]:
        runs = await history(c, name, limit)
        if not runs:
            await require_job(c, name)
        return runs
    runs = client_call(endpoints, body)
    if output == "json":
        emit(output, [run_json(r) for r in runs], [], "")
        return
    rows = [history_row(r) for r in runs]
    for r in rows:
        r["started_at"] = r["first_started_at"]
        r["attempts"], r["duration"] = r["attempts_text"], r["duration_text"]
    emit(output, rows, ["occurrence", "status", "attempts", "worker", "exit_code",
                        "started_at", "duration", "fencing_token", "note"], f"runs of {name}")


@jobs_app.command("logs")
def jobs_logs(name: str,
              occurrence: Annotated[str | None, typer.Argument(
                  help="The run's occurrence id (default: the latest run).")] = None,
              endpoints: EndpointsOpt = "127.0.0.1:2379") -> None:
    """Print a run's output (the last 4 KiB, kept in its run record) and where each
    attempt's full log is (host and path, on the worker that ran it).

    Example:  raftcron jobs logs heartbeat 20261122T013000Z
    """
    from scheduler.admin import run_record
    from scheduler.cliviews import logs_text

    rec = client_call(endpoints, lambda c: run_record(c, name, occurrence))
    for line in logs_text(rec):
        typer.echo(line)


@jobs_app.command("trigger")
def jobs_trigger(name: str, endpoints: EndpointsOpt = "127.0.0.1:2379") -> None:
    """Run a job once now (a manual occurrence, claimed like any other).

    Example:  raftcron jobs trigger heartbeat
    """
    from scheduler.admin import trigger

    occ = client_call(endpoints, lambda c: trigger(c, name))
    typer.echo(f"triggered {name} as occurrence {occ}")


@jobs_app.command("kill")
def jobs_kill(name: str, endpoints: EndpointsOpt = "127.0.0.1:2379",
              occurrence: Annotated[str | None, typer.Option(
                  "--occurrence", help="Kill only this run.")] = None) -> None:
    """Kill a job's running run(s); the run is recorded as killed. Works for a deleted job
    that is still running; nothing running is an error (exit 1).

    Example:  raftcron jobs kill slow-sleeper
    """
    from scheduler.admin import kill

    going = client_call(endpoints, lambda c: kill(c, name, occurrence, "raftcron jobs kill"))
    typer.echo(f"kill requested for {name}: " + ", ".join(going))


@jobs_app.command("suspend")
def jobs_suspend(name: str, endpoints: EndpointsOpt = "127.0.0.1:2379",
                 reason: Annotated[str, typer.Option(
                     "--reason", help="Why (shown by `jobs list` and `jobs show`).")] = ""
                 ) -> None:
    """Stop scheduling a job (runs in progress finish). Records who (user@host), when and
    why; applying a job file or restarting an agent does not resume it.

    Example:  raftcron jobs suspend nightly --reason "disk replacement"
    """
    from scheduler.admin import set_suspended

    changed = client_call(endpoints, lambda c: set_suspended(c, name, True, reason))
    typer.echo(f"{name} suspended" if changed else f"{name} was already suspended")


@jobs_app.command("resume")
def jobs_resume(name: str, endpoints: EndpointsOpt = "127.0.0.1:2379") -> None:
    """Resume a suspended job (from now on: missed fires are not replayed).

    Example:  raftcron jobs resume nightly
    """
    from scheduler.admin import set_suspended

    changed = client_call(endpoints, lambda c: set_suspended(c, name, False))
    typer.echo(f"{name} resumed" if changed else f"{name} was not suspended")


@jobs_app.command("delete")
def jobs_delete(name: str, endpoints: EndpointsOpt = "127.0.0.1:2379") -> None:
    """Delete a job's spec (its run history stays until pruned).

    Example:  raftcron jobs delete old-report
    """
    from scheduler.admin import delete_job

    client_call(endpoints, lambda c: delete_job(c, name))
    typer.echo(f"{name} deleted")


@app.command("locks")
def locks_cmd(endpoints: EndpointsOpt = "127.0.0.1:2379", output: OutputOpt = "table") -> None:
    """Who holds each job lock: worker, host, pid, occurrence, since, TTL left, fencing token.

    Example:  raftcron locks -o json
    """
    check_output(output)
    from scheduler.admin import locks

    rows = client_call(endpoints, locks)
    emit(output, rows, ["job", "worker", "host", "pid", "occurrence", "since", "ttl",
                        "fencing_token"], "locks")


@app.command("workers")
def workers_cmd(endpoints: EndpointsOpt = "127.0.0.1:2379", output: OutputOpt = "table") -> None:
    """Live workers and their tags.

    Example:  raftcron workers
    """
    check_output(output)
    from scheduler.admin import workers

    rows = client_call(endpoints, workers)
    if output == "table":
        from scheduler.cliviews import tags_text

        for row in rows:
            row["tags"] = tags_text(row["tags"])
    emit(output, rows, ["worker", "host", "pid", "tags", "version", "started_at", "lease_ttl"],
         "workers")


# ---------------------------------------------------------------------------- processes
def _worker_config(name: str, endpoints: list[str], tags: str, session_ttl: int,
                   log_dir: Path, clock_offset: float, compact_retention: str = "10m",
                   stop_timeout: float = 30.0) -> Any:
    from coord.process import gc_freeze_enabled
    from scheduler.clock import SystemClock
    from scheduler.plan import parse_duration
    from scheduler.worker import WorkerConfig

    try:
        retention = parse_duration(compact_retention)
    except ValueError as err:
        fail(f"--compact-retention: {err}", 2)
    if stop_timeout < 0:
        fail(f"--stop-timeout: must be 0 or more seconds, got {stop_timeout:g}", 2)
    return WorkerConfig(name=name, endpoints=endpoints, tags=parse_tags(tags),
                        stop_timeout=stop_timeout,
                        session_ttl=session_ttl, log_dir=log_dir,
                        clock=SystemClock(offset=clock_offset),
                        compact_retention=float(retention),
                        freeze_heap=gc_freeze_enabled())


SessionOpt = Annotated[int, typer.Option("--session-ttl",
                                         help="Seconds of the worker's session lease.")]
LogDirOpt = Annotated[Path, typer.Option("--log-dir", help="Where job output logs go.")]
OffsetOpt = Annotated[float, typer.Option("--clock-offset", hidden=True,
                                          help="Skew this worker's clock (tests).")]
CompactOpt = Annotated[str, typer.Option(
    "--compact-retention",
    help="Store history to keep (e.g. 10m, 1h): the workers compact older revisions "
    "away so run-record churn cannot grow the store forever. 0 = never compact (a shared "
    "store compacted by someone else).")]


@app.command("worker")
def worker_cmd(
    endpoints: EndpointsOpt = "127.0.0.1:2379",
    name: Annotated[str, typer.Option("--name", help="Unique worker name.")] = "",
    tags: TagsOpt = "",
    session_ttl: SessionOpt = 10,
    log_dir: LogDirOpt = Path("raftcron-logs"),
    clock_offset: OffsetOpt = 0.0,
    compact_retention: CompactOpt = "10m",
    stop_timeout: StopTimeoutOpt = 30.0,
) -> None:
    """Run a scheduler worker against coord members or a real etcd.

    Example:  raftcron worker --endpoints 10.0.0.1:2379,10.0.0.2:2379 --tags disk=ssd
    """
    from coord.process import setup_process
    from scheduler.worker import Worker

    configure_logging()
    # The worker's CPU goes mostly to grpc.aio's futures and callbacks, as a coord member's
    # does: on uvloop's loop (as in `agent`) an occurrence costs about a seventh less CPU
    # (docs/benchmarks.md). RAFTCRON_UVLOOP=0 keeps asyncio's own loop.
    setup_process()
    # Jobs are forked on a few threads (scheduler.executor); each hands the GIL back and
    # forth several times per spawn, and with the default 5 ms switch interval a thread
    # could wait that long for it at every turn while the event loop is busy.
    sys.setswitchinterval(SWITCH_INTERVAL)
    cfg = _worker_config(name or socket.gethostname(), endpoints.split(","), tags, session_ttl,
                         log_dir, clock_offset, compact_retention, stop_timeout)
    run_until_signal(Worker(cfg).run)


@app.command("agent")
def agent(
    name: NameOpt = DEFAULT_NAME,
    data_dir: DataDirOpt = DEFAULT_DATA_DIR,
    listen_client: ClientOpt = DEFAULT_CLIENT,
    listen_peer: PeerOpt = DEFAULT_PEER,
    initial_cluster: ClusterOpt = None,
    initial_cluster_state: ClusterStateOpt = DEFAULT_CLUSTER_STATE,
    snapshot_count: SnapshotCountOpt = DEFAULT_SNAPSHOT_COUNT,
    snapshot_bytes: SnapshotBytesOpt = DEFAULT_SNAPSHOT_BYTES,
    jobs: Annotated[Path | None, typer.Option(
        "--jobs", help="Apply this job file at start (in the background, retried until "
        "the store takes it; as `apply` without --prune).")] = None,
    tags: TagsOpt = "",
    session_ttl: SessionOpt = 10,
    log_dir: LogDirOpt = Path("raftcron-logs"),
    clock_offset: OffsetOpt = 0.0,
    compact_retention: CompactOpt = "10m",
    stop_timeout: StopTimeoutOpt = 30.0,
) -> None:
    """Run a coord member and a worker in one process (no flags: a single-node cluster).

    Example:  raftcron agent --jobs jobs.example.yaml
    """
    from coord.process import gc_freeze_enabled, setup_process
    from coord.server.server import CoordServer
    from coord.storage import StorageError
    from scheduler.errors import SpecError
    from scheduler.spec import load_jobs
    from scheduler.startup import apply_at_start, cancel_and_wait
    from scheduler.worker import Worker

    configure_logging()
    member = name or socket.gethostname()
    specs = None
    if jobs is not None:
        try:
            specs = load_jobs(jobs)
        except SpecError as err:
            fail(str(err), 2)
    config = store_config_from_flags(member, data_dir, listen_client, listen_peer,
                                     initial_cluster, initial_cluster_state, snapshot_count,
                                     snapshot_bytes)
    # Every flag is checked before the member touches its data dir.
    cfg = _worker_config(member, [listen_client], tags, session_ttl, log_dir, clock_offset,
                         compact_retention, stop_timeout)
    try:
        setup_process()
        server = CoordServer(config, freeze_heap=gc_freeze_enabled())
    except StorageError as err:
        fail(data_dir_failure(data_dir, err), 3)
        return

    async def main(stop: asyncio.Event) -> None:
        from coord.client import Client

        await server.start_until(stop)
        applying: asyncio.Future[None] | None = None
        try:
            if stop.is_set():
                return
            # The worker calls its own member in-process (coord.rpc.local), unless
            # RAFTCRON_AGENT_LOCAL=0 sends its calls through the client port like any client.
            channels = None
            if os.environ.get("RAFTCRON_AGENT_LOCAL", "1") != "0":
                channels = server.channels()
            async with Client([listen_client], timeout=5, channels=channels) as c:
                if specs is not None and jobs is not None:
                    applying = asyncio.ensure_future(apply_at_start(c, specs, jobs))
                try:
                    await Worker(dataclasses.replace(cfg, channels=channels)).run(stop)
                finally:
                    # An apply still retrying ends before its client closes.
                    await cancel_and_wait(applying)
        finally:
            await server.stop()

    try:
        run_until_signal(main)
    except StorageError as err:
        fail(data_dir_failure(data_dir, err), 3)
    except OSError as err:
        fail(str(err), 1)


# ---------------------------------------------------------------------------- cluster
cluster_app = typer.Typer(help="Inspect the coord cluster (members, leader, raft state).",
                          no_args_is_help=True, rich_markup_mode=None)
app.add_typer(cluster_app, name="cluster")


async def _cluster_members(client: Any) -> list[dict[str, Any]]:
    return [{"id": f"{m.id:x}", "name": m.name or "(unstarted)",
             "peer_urls": ",".join(m.peer_urls), "client_urls": ",".join(m.client_urls),
             "learner": m.is_learner} for m in await client.members()]


async def _cluster_status(client: Any) -> list[dict[str, Any]]:
    from coord.client import ClientError

    members = await client.members()
    names = {m.id: m.name for m in members}
    endpoints: list[str] = []
    for m in members:
        endpoints += [u.removeprefix("http://") for u in m.client_urls[:1]]
    for ep in client.endpoints:
        if ep not in endpoints:
            endpoints.append(ep)
    rows = []
    for ep in endpoints:
        try:
            st = await client.status(ep)
        except ClientError as err:
            rows.append({"endpoint": ep, "error": str(err)})
            continue
        mid = st.header.member_id
        rows.append({"endpoint": ep, "id": f"{mid:x}", "name": names.get(mid, ""),
                     "leader": st.leader == mid, "leader_id": f"{st.leader:x}",
                     "raft_term": st.raft_term, "raft_index": st.raft_index,
                     "applied_index": st.raft_applied_index, "version": st.version,
                     "db_size": st.db_size, "error": ""})
    return rows


@cluster_app.command("members")
def cluster_members(endpoints: EndpointsOpt = "127.0.0.1:2379",
                    output: OutputOpt = "table") -> None:
    """Every member: id, name, peer and client URLs, learner or voter.

    Example:  raftcron cluster members --endpoints 127.0.0.1:2379 -o json
    """
    check_output(output)
    rows = client_call(endpoints, _cluster_members)
    emit(output, rows, ["id", "name", "peer_urls", "client_urls", "learner"], "members")


@cluster_app.command("status")
def cluster_status(endpoints: EndpointsOpt = "127.0.0.1:2379",
                   output: OutputOpt = "table") -> None:
    """Each member's view: leader or not, raft term, raft index, applied index, errors.

    Example:  raftcron cluster status --endpoints 127.0.0.1:2379,127.0.0.1:22379
    """
    check_output(output)
    rows = client_call(endpoints, _cluster_status)
    emit(output, rows, ["endpoint", "id", "name", "leader", "raft_term", "raft_index",
                        "applied_index", "version", "error"], "cluster status")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
