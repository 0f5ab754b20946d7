"""Notification settings of a job (``notify:`` entries, ``expect:``): the immutable values a
:class:`~scheduler.spec_model.JobSpec` holds. Checked by :mod:`scheduler.spec_fields`;
delivered by :mod:`scheduler.notify`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

EVENTS: Final = ("failure", "timeout", "lost", "missed", "skipped", "success", "overdue",
                 "recovered")
"""What a ``notify:`` entry may listen to (``on:``)."""

EVENT_OF_STATUS: Final = {"succeeded": "success", "failed": "failure", "timeout": "timeout",
                          "lost": "lost", "missed": "missed", "skipped": "skipped"}
"""The event a run's final status raises (``killed`` — asked for by an operator — none)."""

ENTRY_KEYS: Final = ("on", "webhook", "command", "secret")


@dataclass(frozen=True)
class NotifyEntry:
    """One ``notify:`` entry: the events it wants and exactly one target."""

    on: tuple[str, ...]
    webhook: str | None = None
    command: tuple[str, ...] | None = None
    secret: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"on": list(self.on)}
        if self.webhook is not None:
            out["webhook"] = self.webhook
        if self.command is not None:
            out["command"] = list(self.command)
        if self.secret is not None:
            out["secret"] = self.secret
        return out
