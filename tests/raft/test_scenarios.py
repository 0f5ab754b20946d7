"""Datadriven scenario tests for the Raft core.

Each file in ``scenarios/`` is a sequence of blocks::

    # comments (intent of the next steps)
    command arg key=value
    ----
    expected output (no blank lines)

Blocks are separated by blank lines. Commands are listed in ``interaction.py``.
``RAFT_REWRITE=1 pytest tests/raft/test_scenarios.py`` regenerates every expected output
in place; the diff of the scenario files is then the thing to review.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.raft.harness import Env
from tests.raft.interaction import run_command

SCENARIOS = Path(__file__).parent / "scenarios"
REWRITE = os.environ.get("RAFT_REWRITE", "") not in ("", "0")


@dataclass
class Block:
    preamble: list[str]
    command: str
    expected: list[str] = field(default_factory=list)
    lineno: int = 0


def parse(text: str) -> tuple[list[Block], list[str]]:
    """Blocks and the trailing comment/blank lines after the last block."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pre: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            pre.append(line)
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1] != "----":
            raise ValueError(f"line {i + 1}: expected '----' after command {line!r}")
        block = Block(pre, line, lineno=i + 1)
        pre = []
        i += 2
        while i < len(lines) and lines[i].strip():
            block.expected.append(lines[i])
            i += 1
        blocks.append(block)
    return blocks, pre


def render(blocks: list[Block], outputs: list[list[str]], trailer: list[str]) -> str:
    out: list[str] = []
    for b, got in zip(blocks, outputs, strict=True):
        out += [*b.preamble, b.command, "----", *got, ""]
    while out and not out[-1]:
        out.pop()
    # Drop the blank separator we add if the next preamble starts with a blank line too.
    text = "\n".join(out)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    tail = "\n".join(trailer).strip()
    return text + "\n" + (tail + "\n" if tail else "")


def run_file(path: Path) -> tuple[str, str]:
    text = path.read_text()
    blocks, trailer = parse(text)
    env = Env()
    outputs = []
    for b in blocks:
        try:
            outputs.append(run_command(env, b.command))
        except Exception as e:  # a crash in a command is reported as its output
            raise AssertionError(f"{path.name}:{b.lineno}: {b.command!r} raised {e!r}") from e
    expected = render(blocks, [b.expected for b in blocks], trailer)
    return expected, render(blocks, outputs, trailer)


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.txt")), ids=lambda p: p.stem)
def test_scenario(path: Path) -> None:
    expected, actual = run_file(path)
    if REWRITE:
        path.write_text(actual)
        return
    if expected != actual:
        diff = "\n".join(
            difflib.unified_diff(
                expected.splitlines(), actual.splitlines(), "expected", "actual", lineterm=""
            )
        )
        pytest.fail(f"{path.name} differs (RAFT_REWRITE=1 to accept):\n{diff}")


def test_parser_round_trips() -> None:
    text = "# intent\n\ncmd 1\n----\nout\n\n# next\ncmd2\n----\nok\n"
    blocks, trailer = parse(text)
    assert [b.command for b in blocks] == ["cmd 1", "cmd2"]
    assert render(blocks, [b.expected for b in blocks], trailer) == text


def test_scenarios_exist() -> None:
    assert len(list(SCENARIOS.glob("*.txt"))) >= 10
