"""`raftcron doctor`: check the cluster, the workers and the jobs; each finding with what
to do (see :mod:`scheduler.doctor`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.cli_app import EndpointsOpt, OutputOpt, app, check_output, client_call, fail


@app.command("doctor")
def doctor_cmd(
    endpoints: EndpointsOpt = "127.0.0.1:2379",
    output: OutputOpt = "table",
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="This host's member data dir: check the free disk under it.")]
    = None,
    max_skew: Annotated[float, typer.Option(
        "--max-skew", help="Seconds two worker clocks may differ.")] = 5.0,
    max_lag: Annotated[int, typer.Option(
        "--max-lag", help="Entries a member's applied index may trail the newest.")] = 1000,
    overdue_periods: Annotated[float, typer.Option(
        "--overdue-periods", help="A job with no success for this many of its periods "
        "(or its expect: succeed_within) is overdue.")] = 3.0,
) -> None:
    """Check quorum and leader (every member's status), members behind, free disk under
    --data-dir, live workers and their clock skew, jobs no live worker may run, and jobs
    overdue. Prints each finding with what to do; exit 1 if any is bad, else 0.

    Example:  raftcron doctor --data-dir /var/lib/raftcron -o json
    """
    check_output(output)
    if max_skew <= 0 or max_lag < 0 or overdue_periods <= 0:
        fail("--max-skew and --overdue-periods must be > 0, --max-lag ≥ 0", 2)
    from scheduler.doctor import Options, diagnose

    opts = Options(data_dir=data_dir, max_skew=max_skew, max_lag=max_lag,
                   overdue_periods=overdue_periods)
    findings: list[Any] = client_call(endpoints, lambda c: diagnose(c, opts))
    bad = [f for f in findings if f.level == "bad"]
    if output == "json":
        typer.echo(json.dumps({"ok": not bad, "findings": [f.to_json() for f in findings]},
                              indent=2))
    else:
        for f in findings:
            typer.echo(f"{f.level.upper():4} {f.check:12} {f.message}")
            if f.fix and f.level != "ok":
                typer.echo(f"{'':17} → {f.fix}")
        typer.echo(f"{len(bad)} problem(s) found" if bad else "all good")
    if bad:
        raise typer.Exit(1)
