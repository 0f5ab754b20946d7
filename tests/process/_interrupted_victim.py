"""Run only by test_interrupted_run.py, as a pytest subprocess that is interrupted mid-test:
starts a coord member, records its pid and data dir, then waits to be signalled."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.helpers.procs import ProcessGroup, start_coord


def test_victim(procs: ProcessGroup) -> None:
    member = start_coord(procs)
    data = procs.workdir / "n1-data"
    info = {"pid": member.popen.pid, "data": str(data), "workdir": str(procs.workdir)}
    Path(os.environ["VICTIM_INFO"]).write_text(json.dumps(info))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait to be interrupted (bounded)
        time.sleep(0.1)
