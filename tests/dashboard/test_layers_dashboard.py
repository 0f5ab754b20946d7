"""The dashboard's place in the layering contract (tests/layering.py): a store client
beside the CLI — nothing below the CLI imports it, and it imports no CLI module."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.layering import PACKAGES, ROOT, check


@pytest.mark.parametrize(("file", "line", "importer", "imported"), [
    ("scheduler/admin.py", "from scheduler.dashboard import model",
     "scheduler.admin", "scheduler.dashboard.model"),
    ("scheduler/dashboard/api.py", "from scheduler.cli_app import fail",
     "scheduler.dashboard.api", "scheduler.cli_app"),
    ("scheduler/dashboard/model.py", "import coord.server.server",
     "scheduler.dashboard.model", "coord.server.server"),
])
def test_a_dashboard_import_across_the_layers_is_reported(
        tmp_path: Path, file: str, line: str, importer: str, imported: str) -> None:
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    path = tmp_path / file
    path.write_text(path.read_text() + f"\n{line}\n")
    violations, _ = check(tmp_path)
    assert [(v.importer, v.imported) for v in violations] == [(importer, imported)]
