"""The durable watermark: a small file, beside the WAL, naming a WAL record known durable.

A WAL alone cannot tell that it lost its end: a segment deleted, or a file cut short at a
record boundary, reads back as a shorter, perfectly valid log, and a cut inside a record
looks like a torn write. The watermark is written (atomically, fsync'd) only after the
records it names are durable — at open, after a cut, every second or so while records are
written, and at a clean close — so a log that now ends before it lost records that were
written, and :meth:`coord.storage.WAL.open` refuses it (``must_cover``).

File format: one JSON object ``{"seq": N, "clean": bool, "at": ISO time}``; a file that is
not that is damage (:class:`WatermarkError`): nothing is assumed from it.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from coord.storage._fs import FILE_MODE, fsync_dir, write_all
from coord.storage.errors import StorageError

__all__ = ["Mark", "Watermark", "WatermarkError"]


class WatermarkError(StorageError):
    """The watermark file cannot be read or understood."""


@dataclass(frozen=True, slots=True)
class Mark:
    """What a watermark file says: records up to ``seq`` were durable at ``at``; ``clean``:
    written by a clean close, after which the log had no record past ``seq``."""

    seq: int
    clean: bool
    at: str


class Watermark:
    """The watermark file at ``path``; :meth:`mark` may be called from any thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seq = -1

    def read(self) -> Mark | None:
        """The mark on disk, ``None`` when there is no file (a data dir from before the
        watermark, or a new one)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(raw)
            mark = Mark(int(doc["seq"]), bool(doc["clean"]), str(doc["at"]))
        except (ValueError, KeyError, TypeError) as err:
            raise WatermarkError(f"the durable watermark {self.path} is damaged ({err})") from err
        if mark.seq < 0:
            raise WatermarkError(f"the durable watermark {self.path} names record {mark.seq}")
        return mark

    @property
    def seq(self) -> int:
        """The last sequence number this object wrote (-1: none yet)."""
        return self._seq

    def mark(self, seq: int, *, clean: bool = False) -> bool:
        """Record that every WAL record up to ``seq`` is durable (call it only once they
        are). Atomic: temporary file, fsync, rename, directory fsync. Skipped when an equal
        or later mark was written already (unless ``clean`` is new); returns whether it
        wrote."""
        with self._lock:
            if seq < self._seq or (seq == self._seq and not clean):
                return False
            doc = {"seq": seq, "clean": clean,
                   "at": datetime.now(UTC).isoformat(timespec="milliseconds")}
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            try:
                write_all(fd, json.dumps(doc).encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.path)
            fsync_dir(self.path.parent)
            self._seq = seq
            return True
