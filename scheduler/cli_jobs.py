"""The read and control commands on jobs and the store: `jobs list/show/history/logs/
trigger/kill/suspend/resume/delete`, `locks`, `workers`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from scheduler.cli_app import (
    EndpointsOpt,
    OutputOpt,
    app,
    check_limit,
    check_output,
    client_call,
    fail,
    jobs_app,
)
from scheduler.cli_output import emit, iso


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
    if last and last.get("notifications"):
        typer.echo(f"{'notified':18} " + ", ".join(
            f"{n.get('event')} {n.get('result')} ({n.get('tries')} "
            f"{'try' if n.get('tries') == 1 else 'tries'})"
            for n in last["notifications"]))


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
        r["notified"] = r["notified_text"]
    emit(output, rows, ["occurrence", "status", "attempts", "worker", "exit_code",
                        "started_at", "duration", "fencing_token", "note", "notified"],
         f"runs of {name}")


@jobs_app.command("logs")
def jobs_logs(name: str,
              occurrence: Annotated[str | None, typer.Argument(
                  help="The run's occurrence id (default: the latest run).")] = None,
              endpoints: EndpointsOpt = "127.0.0.1:2379",
              follow: Annotated[bool, typer.Option(
                  "--follow", "-f", help="If the run is running: print its output as it is "
                  "written, from whichever host runs it, until it ends.")] = False) -> None:
    """Print a run's output (the last 4 KiB, kept in its run record) and where each
    attempt's full log is (host and path, on the worker that ran it). With --follow, a
    running run's output streams until the run ends, then its status line; Ctrl-C exits 130.

    Example:  raftcron jobs logs heartbeat 20261122T013000Z
    Example:  raftcron jobs logs backup --follow
    """
    from scheduler.admin import run_record
    from scheduler.claim import ACTIVE, RunRecord
    from scheduler.cliviews import logs_text

    async def body(c: Any) -> RunRecord:
        from scheduler.output_stream import follow as follow_run

        rec = await run_record(c, name, occurrence)
        if not follow or rec.status not in ACTIVE:
            return rec
        typer.echo(f"following job {name} occurrence {rec.occurrence} "
                   f"on {rec.host or rec.worker} (Ctrl-C to stop)")

        def emit(text: str) -> None:
            typer.echo(text, nl=False)
        final = await follow_run(c, name, rec.occurrence, emit)
        try:
            done = RunRecord.decode(final.encode()) if final is not None else None
        except ValueError:
            done = None
        if done is None:
            return await run_record(c, name, rec.occurrence)
        code = "" if done.exit_code is None else f", exit {done.exit_code}"
        typer.echo(f"--- job {name} occurrence {done.occurrence}: {done.status}{code}"
                   + (f" ({done.note})" if done.note else ""))
        raise _Followed

    try:
        rec = client_call(endpoints, body)
    except _Followed:
        return
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    for line in logs_text(rec):
        typer.echo(line)


class _Followed(Exception):
    """The followed run ended and its status line is printed."""


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
