"""Installs are reproducible: make run/test install exactly what requirements.lock pins, and
pyproject.toml's lower bounds are ones the committed generated code actually runs on."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
PROTO = REPO / "coord" / "pb"


def _lock() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for raw in LOCK.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep, f"requirements.lock: {raw!r} is not an exact pin (name==version)"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def _lower_bound(requirement: str) -> Version:
    lows = [Version(s.version) for s in Requirement(requirement).specifier if s.operator == ">="]
    assert lows, f"{requirement} has no lower bound"
    return max(lows)


def _dependencies() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    return {canonicalize_name(Requirement(r).name): r for r in reqs}


def test_the_test_environment_is_exactly_the_lock() -> None:
    """Every package this suite runs with is pinned, at the version it runs with."""
    pins = _lock()
    unpinned, wrong = [], []
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        if name == "raftcron":
            continue
        if name not in pins:
            unpinned.append(name)
        elif Version(dist.version) != pins[name]:
            wrong.append(f"{name} {dist.version} (lock: {pins[name]})")
    assert not unpinned, f"installed but not in requirements.lock: {sorted(unpinned)}"
    assert not wrong, f"installed at another version than the lock's: {wrong}"


def test_every_declared_dependency_is_pinned_within_its_bounds() -> None:
    pins = _lock()
    for name, requirement in _dependencies().items():
        assert name in pins, f"{name} is a dependency but requirements.lock does not pin it"
        assert Requirement(requirement).specifier.contains(pins[name], prereleases=True), (
            f"the lock pins {name}=={pins[name]}, outside pyproject's {requirement}"
        )


def test_make_installs_through_the_lock() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "PIP_CONSTRAINT=$(abspath $(LOCK))" in makefile
    installs = [ln for ln in makefile.splitlines() if "install" in ln and "$(PIP)" in ln]
    assert len(installs) >= 4, installs  # pip itself, then the package, for run and for test
    bare = [ln for ln in makefile.splitlines()
            if "$(BIN)/python -m pip install" in ln and "PIP_CONSTRAINT" not in ln]
    assert not bare, f"installs that bypass the lock: {bare}"


def test_runtime_lower_bounds_are_what_the_generated_code_needs() -> None:
    """The generated modules refuse older runtimes, so pyproject must not promise them."""
    deps = _dependencies()
    grpc_gen = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'",
                         (PROTO / "rpc_pb2_grpc.py").read_text())
    assert grpc_gen is not None
    assert _lower_bound(deps["grpcio"]) >= Version(grpc_gen.group(1))
    pb_gen = re.search(r"# Protobuf Python Version: ([\d.]+)", (PROTO / "rpc_pb2.py").read_text())
    assert pb_gen is not None
    generated = Version(pb_gen.group(1))
    assert _lower_bound(deps["protobuf"]) >= generated
    # protobuf's generated code runs only on a runtime of the same major version.
    assert not Requirement(deps["protobuf"]).specifier.contains(f"{generated.major + 1}.0.0")
