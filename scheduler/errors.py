"""The scheduler's typed errors.

Every error the scheduler raises on bad input derives from :class:`SchedulerError`. Job-file
problems are collected, never raised one at a time: :class:`SpecError` carries every
:class:`SpecProblem` found in a file, each naming the file, line, column, job and field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ExecutorError",
    "ScheduleError",
    "SchedulerError",
    "SpecError",
    "SpecProblem",
]


class SchedulerError(Exception):
    """Base class of every error raised by the ``scheduler`` package."""


class ScheduleError(SchedulerError, ValueError):
    """A schedule expression (cron line, macro or ``@every``) is invalid; the message says why."""


class ExecutorError(SchedulerError):
    """A job process could not be started (missing executable, bad workdir, ...)."""


@dataclass(frozen=True)
class SpecProblem:
    """One thing wrong with a job file.

    ``line`` and ``column`` are 1-based and ``None`` when unknown (e.g. a spec read back from
    JSON). ``job`` is the job's name, or ``"#N"`` (1-based position) when it has no usable name.
    """

    file: str
    line: int | None
    column: int | None
    job: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        parts = [where]
        if self.job is not None:
            parts.append(f"job {_quote(self.job)}" if not self.job.startswith("#") else
                         f"job {self.job}")
        if self.field is not None:
            parts.append(f"field {_quote(self.field)}")
        parts.append(self.message)
        return ": ".join(parts)


class SpecError(SchedulerError, ValueError):
    """A job file (or stored spec) is invalid. ``problems`` lists everything found, in file order.

    When this is raised nothing was loaded: callers must not write any job from the file.
    """

    def __init__(self, problems: Sequence[SpecProblem]) -> None:
        self.problems: tuple[SpecProblem, ...] = tuple(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        lines = [str(p) for p in self.problems]
        if len(lines) > 1:
            lines.insert(0, f"{len(lines)} problems:")
        return "\n".join(lines)


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
