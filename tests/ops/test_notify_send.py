"""One try of a notify command (scheduler.notify.send) under the worker's event loop
(uvloop): the outcome is the command's exit status, whatever it does with stdin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import uvloop

from scheduler.notify import send

BODY = {"event": "overdue", "job": "nightly", "status": "overdue"}


def test_a_command_that_ignores_stdin_succeeds_every_time() -> None:
    """`true` exits before anything is written to it: each of 100 tries is a success (a
    try counted failed is retried, and the command runs again)."""
    async def go() -> list[str]:
        errors = []
        for i in range(100):
            try:
                await send({"command": ["true"]}, BODY, f"nightly/x/overdue.{i}")
            except Exception as err:  # noqa: BLE001 - every failure is the finding
                errors.append(repr(err))
        return errors

    assert uvloop.run(go()) == []


def test_a_command_gets_the_body_on_stdin_and_its_delivery_id(tmp_path: Path) -> None:
    out = tmp_path / "seen"
    script = f'cat > {out}.body; printf "%s" "$RAFTCRON_DELIVERY" > {out}.id'
    uvloop.run(send({"command": ["sh", "-c", script]}, BODY, "nightly/x/overdue.0"))
    assert json.loads(Path(f"{out}.body").read_text()) == BODY
    assert Path(f"{out}.id").read_text() == "nightly/x/overdue.0"


def test_a_failing_command_is_a_failed_try() -> None:
    with pytest.raises(RuntimeError, match="command exited 3: no"):
        uvloop.run(send({"command": ["sh", "-c", "echo no >&2; exit 3"]}, BODY, "d"))
