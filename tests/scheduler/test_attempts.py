"""The run record's attempts list stays compatible both ways (#13 item 7)."""

from __future__ import annotations

import json

from scheduler.attempts import attempt_count, attempts_of, duration
from scheduler.claim import RunRecord
from scheduler.cliviews import history_row, logs_text

OLD = {"job": "j", "occurrence": "20261122T013000Z", "status": "succeeded", "worker": "w1",
       "host": "h1", "attempt": 2, "started_at": 100.0, "finished_at": 103.5,
       "exit_code": 0, "output_tail": "done\n"}
"""A record as a worker from before the attempts list wrote it."""


def test_a_record_of_an_older_worker_reads_as_its_one_known_attempt() -> None:
    rec = RunRecord.decode(json.dumps(OLD).encode())
    assert rec.attempts == []
    assert attempts_of(rec) == [{"attempt": 2, "started_at": 100.0, "finished_at": 103.5,
                                 "exit_code": 0, "signal": None, "status": "succeeded",
                                 "log": ""}]
    assert attempt_count(rec) == 2 and duration(rec) == 3.5
    assert history_row(rec)["attempts_text"] == "2:succeeded(0)"
    text = "\n".join(logs_text(rec))
    assert "h1: <--log-dir of worker w1>/j/20261122T013000Z.2.log" in text and "done" in text


def test_an_older_worker_reading_a_new_record_ignores_the_attempts() -> None:
    tries = [{"attempt": 1, "started_at": 100.0, "finished_at": 101.0, "exit_code": 1,
              "signal": None, "status": "failed", "log": "/l/j/o.1.log"},
             {"attempt": 2, "started_at": 103.0, "finished_at": 104.0, "exit_code": 0,
              "signal": None, "status": "succeeded", "log": "/l/j/o.2.log"}]
    new = RunRecord(job="j", occurrence="o", status="succeeded", attempt=2,
                    started_at=103.0, finished_at=104.0, attempts=tries)
    data = json.loads(new.encode())
    assert data["attempts"] == tries
    # What an older RunRecord.decode does: keep the fields it knows.
    old_fields = set(OLD) | {"run_id", "pid", "fencing_token", "lease", "spec_revision",
                             "claimed_at", "signal", "note"}
    older = {k: v for k, v in data.items() if k in old_fields}
    assert RunRecord.decode(json.dumps(older).encode()).attempt == 2
    assert duration(RunRecord.decode(new.encode())) == 4.0  # first start to the end
