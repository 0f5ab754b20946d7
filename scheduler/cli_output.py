"""How the client commands print rows: a table (rich's, or plain columns when long) or
JSON; instants as ISO 8601."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import typer


def iso(t: datetime) -> str:
    """An instant as ISO 8601: to the second, or to the millisecond when it has a fraction
    (the fire instants of ``@every`` jobs)."""
    return t.isoformat(timespec="milliseconds" if t.microsecond else "seconds")


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
        # rich lays out a table cell by cell, far too slow for thousands of rows (figures in
        # docs/benchmarks.md); plain aligned columns print the same information at once.
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
