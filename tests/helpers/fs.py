"""File-system capabilities some tests depend on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coord.storage._fs import preallocate


def require_preallocation(directory: Path) -> None:
    """Skip the calling test, saying why, where the file system under ``directory`` cannot
    reserve blocks (``fallocate(2)``): the WAL then runs without preallocated segments (as
    ``test_a_segment_that_cannot_be_preallocated_still_works`` checks), and a test of what
    preallocation does has nothing to observe."""
    probe = directory / ".fallocate-probe"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        ok = preallocate(fd, 8192) and os.fstat(fd).st_size == 8192
    finally:
        os.close(fd)
        probe.unlink()
    if not ok:
        pytest.skip(f"the file system under {directory} cannot preallocate (fallocate(2))")
