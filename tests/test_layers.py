"""The layering contract (tests/layering.py, run by ``make lint``): the tree keeps it, and
an import that breaks a layer — added to a copy of the tree — is reported and fails the
check."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import layering
from tests.layering import NO_CYCLES, PACKAGES, ROOT, check


def test_the_tree_keeps_the_layers() -> None:
    violations, _stale = check()
    assert violations == [], "\n".join(map(str, violations))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of coord/ and scheduler/ to add bad imports to."""
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return tmp_path


def _add(tree: Path, file: str, line: str) -> None:
    path = tree / file
    path.write_text(path.read_text() + f"\n{line}\n")


BAD = [
    ("coord/raft/log.py", "from coord.mvcc.store import KVStore",
     "coord.raft.log", "coord.mvcc.store"),
    ("coord/raft/rawnode.py", "from coord.pb import raft_pb2",
     "coord.raft.rawnode", "coord.pb.raft_pb2"),
    ("coord/mvcc/store.py", "from coord.server import validate",
     "coord.mvcc.store", "coord.server.validate"),
    ("coord/lease/lessor.py", "from coord.pb import rpc_pb2",
     "coord.lease.lessor", "coord.pb.rpc_pb2"),
    ("coord/storage/wal.py", "import coord.client",
     "coord.storage.wal", "coord.client"),
    ("coord/server/core.py", "from coord.api.kv import KVService",
     "coord.server.core", "coord.api.kv"),
    ("coord/api/kv.py", "from coord.server.core import Core",
     "coord.api.kv", "coord.server.core"),
    ("coord/rpc/h2/server.py", "from coord.api import errors",
     "coord.rpc.h2.server", "coord.api.errors"),
    ("coord/client/client.py", "from coord.rpc.local import LocalTarget",
     "coord.client.client", "coord.rpc.local"),
    ("scheduler/worker/wiring.py", "from coord.server.server import CoordServer",
     "scheduler.worker.wiring", "coord.server.server"),
    ("coord/pb/kv_pb2.py", "from coord import errors",
     "coord.pb.kv_pb2", "coord.errors"),
    ("coord/limits.py", "from coord.errors import CoordError",
     "coord.limits", "coord.errors"),
]


@pytest.mark.parametrize(("file", "line", "importer", "imported"), BAD,
                         ids=[b[2] for b in BAD])
def test_a_bad_import_is_reported(tree: Path, file: str, line: str, importer: str,
                                  imported: str) -> None:
    _add(tree, file, line)
    violations, _ = check(tree)
    assert [(v.importer, v.imported) for v in violations] == [(importer, imported)]


def test_a_cycle_is_reported(tree: Path) -> None:
    # coord.rpc.handlers imports coord.rpc.status; the other way round closes a cycle.
    _add(tree, "coord/rpc/status.py", "from coord.rpc.handlers import MethodHandler")
    violations, _ = check(tree)
    assert [(v.rule, v.importer, v.imported) for v in violations] == [
        (NO_CYCLES, "coord.rpc.handlers", "coord.rpc.status")]


def test_a_stale_allowance_is_reported(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An allowed breach excuses its import while it exists, and is reported stale once the
    import is gone (so the list of known breaches only shrinks)."""
    monkeypatch.setitem(layering.ALLOWED, ("scheduler.claim", "coord.rpc.local"), "a test")
    _add(tree, "scheduler/claim.py", "import coord.rpc.local")
    violations, stale = check(tree)
    assert violations == []
    assert "scheduler.claim -> coord.rpc.local" not in stale
    path = tree / "scheduler/claim.py"
    path.write_text(path.read_text().replace("import coord.rpc.local\n", ""))
    violations, stale = check(tree)
    assert violations == []
    assert "scheduler.claim -> coord.rpc.local" in stale


def test_the_lint_command_fails_on_a_bad_import(tree: Path) -> None:
    """What ``make lint`` runs exits 0 on the tree and 1 once a layer is broken."""
    cmd = [sys.executable, "-m", "tests.layering", "--root", str(tree)]
    ok = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    _add(tree, "scheduler/claim.py", "import coord.rpc.local")
    bad = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert "scheduler.claim" in bad.stderr and "coord.rpc.local" in bad.stderr
