"""``python -m tests.helpers.fault_member coord serve ...``: the raftcron CLI with the
test fault hook installed (:mod:`tests.helpers.faults`), for process tests that cut links."""

from __future__ import annotations

from scheduler.cli import main
from tests.helpers.faults import install

if __name__ == "__main__":
    install()
    main()
