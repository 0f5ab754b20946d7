"""Child process for the crash test: append+sync forever, report each synced counter.

Usage: python -m tests.storage._crash_child WAL_DIR SEED

Every record is an ENTRY whose payload starts with its counter (u64 LE, 1, 2, 3, ...),
continuing from what is already in the WAL. After each sync the last synced counter is written
to stdout as one line; the parent kill -9's this process at a random moment.
"""

from __future__ import annotations

import random
import struct
import sys

import structlog

from coord.storage import ENTRY, WAL, Record


def main() -> None:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    directory, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    wal, records = WAL.open(directory, segment_size=256 * 1024, carry_over=())
    counter = struct.unpack_from("<Q", records[-1].data)[0] if records else 0
    out = sys.stdout
    while True:
        batch = []
        for _ in range(rng.randint(1, 20)):
            counter += 1
            batch.append(
                Record(ENTRY, struct.pack("<Q", counter) + rng.randbytes(rng.randint(0, 3000)))
            )
        wal.append(batch)
        wal.sync()
        out.write(f"{counter}\n")
        out.flush()


if __name__ == "__main__":
    main()
