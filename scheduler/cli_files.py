"""`raftcron validate` and `raftcron apply`: a job file checked, or stored (a summary
beyond SUMMARY_OVER jobs)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer

from scheduler.cli_app import EndpointsOpt, app, client_call, fail
from scheduler.cli_output import iso

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
