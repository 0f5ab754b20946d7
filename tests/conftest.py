"""Shared fixtures: temp dirs with process cleanup, binary lookup."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from coord.logsetup import configure as configure_logging
from tests.helpers import procs as procs_module
from tests.helpers.binaries import require_binary
from tests.helpers.procs import ProcessGroup, process_group


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C and SIGTERM both unwind the run as a KeyboardInterrupt, so fixtures and the
    hooks below still run; the flag makes the process groups remove their data too."""
    procs_module.mark_interrupted()
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)


def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    procs_module.mark_interrupted()
    procs_module.close_all()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    procs_module.close_all()  # groups whose fixture teardown never ran


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
