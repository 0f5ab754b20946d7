"""Helpers shared by the job file tests (test_spec*.py): load a text, collect its problems."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from scheduler.errors import SpecError, SpecProblem
from scheduler.spec import JobSpec, load_jobs_text

REPO = Path(__file__).resolve().parents[2]


def load(text: str, filename: str = "jobs.yaml") -> list[JobSpec]:
    return load_jobs_text(textwrap.dedent(text), filename)


def problems(text: str, filename: str = "jobs.yaml") -> list[SpecProblem]:
    with pytest.raises(SpecError) as info:
        load(text, filename)
    return list(info.value.problems)


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, [str(p) for p in found]
    return str(found[0])


MINIMAL = """\
jobs:
  - name: hello
    schedule: "* * * * *"
    command: echo hi
"""


def job_with(extra: str) -> str:
    """A one-job file whose 4th line onwards is ``extra`` (indented as job fields)."""
    return MINIMAL + textwrap.indent(textwrap.dedent(extra), "    ")
