"""The core stays pure: no I/O, clock, threads, protobuf or module-global randomness."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import coord.raft

CORE = Path(coord.raft.__file__).parent
FORBIDDEN = re.compile(r"^(asyncio|socket|grpc|os|time|threading|subprocess|google)(\.|$)")


def modules() -> list[Path]:
    return sorted(CORE.glob("*.py"))


def test_no_forbidden_imports() -> None:
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not FORBIDDEN.match(name), f"{path.name} imports {name}"


def test_no_global_random_or_print() -> None:
    for path in modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                base = node.func.value
                if isinstance(base, ast.Name) and base.id == "random":
                    raise AssertionError(f"{path.name}: random.{node.func.attr}() is global RNG")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "print", f"{path.name} prints"


def test_public_api_is_curated() -> None:
    for name in coord.raft.__all__:
        assert hasattr(coord.raft, name), name
    assert "RawNode" in coord.raft.__all__ and "Raft" not in coord.raft.__all__
