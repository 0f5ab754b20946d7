"""Shared fixtures: temp dirs with process cleanup, binary lookup."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from coord.logsetup import configure as configure_logging
from tests.helpers.binaries import require_binary
from tests.helpers.procs import ProcessGroup, process_group

# In-process servers and workers log at info level and up (subprocesses keep their own).
configure_logging(level="info", json=False)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcessGroup]:
    """A process group whose survivors are kill -9'd at teardown."""
    with process_group(tmp_path) as group:
        yield group


@pytest.fixture(scope="session")
def etcd_bin() -> str:
    return require_binary("etcd")


@pytest.fixture(scope="session")
def etcdctl_bin() -> str:
    return require_binary("etcdctl")
