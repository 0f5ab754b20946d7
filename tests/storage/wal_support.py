"""What the WAL tests (test_wal*.py) share: records to append, reopening a WAL and reading it
back, and a closed log written in one go.
"""

from __future__ import annotations

from pathlib import Path

from coord.storage import (
    ENTRY,
    WAL,
    Record,
)


def entries(n: int, start: int = 0, size: int = 40) -> list[Record]:
    return [
        Record(ENTRY, f"entry-{i}-".encode().ljust(size, b"x")) for i in range(start, start + n)
    ]


SMALL = 4096
"""A segment size for tests that rewrite a segment many times (the default is 64 MiB)."""


def write_closed(path: Path, records: list[Record]) -> Path:
    """Write ``records`` to a fresh WAL, sync, close; return the single segment's path (which
    the close truncated to its last record)."""
    wal, _ = WAL.open(path)
    wal.append(records)
    wal.sync()
    seg = wal.segments[-1].path
    wal.close()
    return seg
