"""The layering contract of DESIGN.md ("Layers"): imports point down. Checked by ``make lint``
(``python -m tests.layering``) and by tests/test_layers.py.

Every ``import`` in ``coord/`` and ``scheduler/`` counts: at module level, inside functions
and under ``TYPE_CHECKING`` alike (a type-only import is still a dependency). A rule names
the packages it applies to, the packages they must not import, and the exceptions that are
part of the design (``allowed``: modules that stay importable inside a forbidden package;
``exempt``: importers the rule does not apply to, the composition roots).
``ALLOWED`` lists the known breaches still being removed, each with its reason; an entry
that no longer matches anything is reported as stale so that it is deleted.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("coord", "scheduler")

PB = "coord.pb"
"""The generated protobuf modules: a leaf every layer but coord/raft may import."""
LEAVES = ("coord.errors", "coord.limits", "coord.netaddr", "coord.aiotools", "coord.logsetup",
          "coord.process")
"""Modules of coord shared by every layer above coord/raft; they import nothing of coord."""


CLI_MODULES = ("scheduler.cli", *sorted(f"scheduler.{p.stem}"
                                        for p in (ROOT / "scheduler").glob("cli_*.py")))
"""The command line's modules (scheduler/cli.py, cli_*.py): typer commands, the top layer
(scheduler/cliviews.py is not one: plain views of records, shared with the dashboard)."""


@dataclass(frozen=True)
class Rule:
    name: str
    sources: tuple[str, ...]
    """Packages (or modules) the rule applies to."""
    forbidden: tuple[str, ...]
    """What they must not import (a package means any module in it)."""
    allowed: tuple[str, ...] = ()
    """What stays allowed inside a forbidden package."""
    exempt: tuple[str, ...] = ()
    """Importers the rule does not apply to (a composition root)."""


RULES: tuple[Rule, ...] = (
    Rule("coord/raft imports nothing of coord but itself (no protobuf either)",
         ("coord.raft",), ("coord", "scheduler"), allowed=("coord.raft",)),
    Rule("shared leaf modules import nothing of coord", LEAVES, ("coord", "scheduler")),
    Rule("generated protobuf modules are a leaf", (PB,), ("coord", "scheduler"),
         allowed=(PB,)),
    Rule("storage, mvcc, lease and auth don't import the node, the API, the RPC runtime or "
         "the client", ("coord.storage", "coord.mvcc", "coord.lease", "coord.auth"),
         ("coord.server", "coord.api", "coord.rpc", "coord.client", "scheduler"),
         allowed=(PB,)),
    Rule("mvcc, lease, storage and auth don't build the etcd API's messages (rpc_pb2): the "
         "API layer builds WatchResponse", ("coord.storage", "coord.mvcc", "coord.lease",
                                           "coord.auth"),
         (f"{PB}.rpc_pb2",)),
    Rule("the RPC runtime knows no service, node or store",
         ("coord.rpc",),
         ("coord.api", "coord.server", "coord.client", "coord.mvcc", "coord.lease",
          "coord.storage", "coord.raft", "scheduler")),
    Rule("the server doesn't import the API adapters or the client, except its composition "
         "root (coord.server.server)", ("coord.server",),
         ("coord.api", "coord.client", "scheduler"),
         allowed=(PB,), exempt=("coord.server.server",)),
    Rule("the API adapters reach the server only through narrow interfaces "
         "(coord.api.ports), besides the pure request checks (coord.server.validate)",
         ("coord.api",), ("coord.server", "coord.client", "scheduler"),
         allowed=("coord.server.validate",)),
    Rule("the client imports no server, API-server or storage code",
         ("coord.client",),
         ("coord.server", "coord.api", "coord.rpc", "coord.mvcc", "coord.lease",
          "coord.storage", "coord.raft", "scheduler"),
         allowed=(PB,)),
    Rule("operations (metrics, health: coord.ops) read a member through its accessors and "
         "are wired by the composition roots; no API adapter, client or scheduler code",
         ("coord.ops",), ("coord.api", "coord.client", "scheduler"),
         allowed=(PB,)),
    Rule("the node's parts take plain hooks from coord.ops, never import it (only the "
         "composition root, coord.server.server, does)", ("coord.server", "coord.storage",
         "coord.mvcc", "coord.lease", "coord.rpc", "coord.api", "coord.client"),
         ("coord.ops",), exempt=("coord.server.server",)),
    Rule("the scheduler talks to coord only through coord.client, except the CLI (the "
         "composition root of agent and coord serve, and its store flags)", ("scheduler",),
         ("coord.server", "coord.api", "coord.rpc", "coord.mvcc", "coord.lease",
          "coord.storage", "coord.raft"),
         allowed=(PB,), exempt=("scheduler.cli", "scheduler.cli_store")),
    Rule("the dashboard is a store client beside the CLI commands: nothing below the CLI "
         "imports it (only scheduler.cli and scheduler.cli_dashboard start it)",
         ("scheduler",), ("scheduler.dashboard",),
         exempt=("scheduler.dashboard", "scheduler.cli", "scheduler.cli_dashboard")),
    Rule("the dashboard imports no CLI module (typer, exits): it shares the CLI's logic "
         "through scheduler.admin and the modules below", ("scheduler.dashboard",),
         CLI_MODULES),
)

ALLOWED: dict[tuple[str, str], str] = {
}
"""Known breaches being removed: (importer, imported) → why it is still there."""

ALLOWED_CYCLES: dict[frozenset[str], str] = {
    frozenset({"coord.raft.raft", "coord.raft.leader", "coord.raft.follower"}):
        "deliberate: leader.py and follower.py are Raft's step functions split by role (as "
        "etcd-io/raft's stepLeader/stepFollower take *raft); they name Raft for types only",
}
"""Known import cycles (their modules) → why they are there."""


@dataclass(frozen=True)
class Violation:
    rule: str
    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        if self.rule == NO_CYCLES:
            return f"{self.importer} <-> {self.imported}: {self.rule}"
        return f"{self.importer}:{self.line} imports {self.imported}: {self.rule}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(root: Path) -> Iterator[Path]:
    for pkg in PACKAGES:
        yield from sorted((root / pkg).rglob("*.py"))


def imports(path: Path, module: str, known: set[str]) -> Iterator[tuple[str, int]]:
    """``(imported module, line)`` for every import in the file, resolved to the most
    specific known module (``from coord.pb import rpc_pb2`` → ``...rpc_pb2``)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in known else base), node.lineno


def _within(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


NO_CYCLES = "modules don't import each other in a cycle"


def check(root: Path = ROOT) -> tuple[list[Violation], list[str]]:
    """Every breach of :data:`RULES` and every import cycle not allowed
    (:data:`ALLOWED`, :data:`ALLOWED_CYCLES`), and the allowances that match nothing any
    more (stale)."""
    files = {module_name(p, root): p for p in source_files(root)}
    known = set(files)
    violations: list[Violation] = []
    used: set[tuple[str, str]] = set()
    graph: dict[str, set[str]] = {}
    for module, path in sorted(files.items()):
        for imported, line in imports(path, module, known):
            if imported in known and imported != module:
                graph.setdefault(module, set()).add(imported)
            for rule in RULES:
                if not _within(module, rule.sources) or _within(module, rule.exempt):
                    continue
                if not _within(imported, rule.forbidden) or _within(imported, rule.allowed):
                    continue
                if (module, imported) in ALLOWED:
                    used.add((module, imported))
                    continue
                violations.append(Violation(rule.name, module, imported, line))
    stale = [f"{a} -> {b}" for a, b in sorted(set(ALLOWED) - used)]
    used_cycles: set[frozenset[str]] = set()
    for component in cycles(graph):
        if frozenset(component) in ALLOWED_CYCLES:
            used_cycles.add(frozenset(component))
            continue
        violations.append(Violation(NO_CYCLES, component[0], " <-> ".join(component[1:]), 0))
    stale += [" <-> ".join(sorted(c)) for c in set(ALLOWED_CYCLES) - used_cycles]
    return violations, stale


def main(argv: list[str]) -> int:
    """``python -m tests.layering [--root DIR]``: exit 1 when an import breaks a layer."""
    root = Path(argv[argv.index("--root") + 1]) if "--root" in argv else ROOT
    violations, stale = check(root)
    for v in violations:
        print(f"layering: {v}", file=sys.stderr)
    for entry in stale:
        print(f"layering: stale allowance (it matches nothing any more; delete it from "
              f"tests/layering.py): {entry}", file=sys.stderr)
    if violations:
        print(f"layering: {len(violations)} import(s) break DESIGN.md's layers",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
