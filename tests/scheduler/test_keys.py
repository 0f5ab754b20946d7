"""The one validator of names read from the store (issue 15, items 5-6)."""

from __future__ import annotations

import json

import pytest

from scheduler import keys
from scheduler.claim import LockHolder, RunRecord
from scheduler.decode import BadValue, decode_spec, json_object


@pytest.mark.parametrize("occ", ["20261122T013000Z", "20261122T013000.250Z",
                                 "20261122T013000Z-manual-ab12"])
def test_valid_occurrences(occ: str) -> None:
    assert keys.valid_occurrence(occ)


@pytest.mark.parametrize("occ", ["", "x", "20261122T013000Z-manual-ab12/../../../x",
                                 "20261122T013000Z/..", "../20261122T013000Z", 5, None])
def test_invalid_occurrences(occ: object) -> None:
    assert not keys.valid_occurrence(occ)


def test_trigger_key_with_a_path_is_refused() -> None:
    good = keys.job_occurrence_from(b"/cron/trigger/j/20261122T013000Z-manual-ab12",
                                    keys.TRIGGERS)
    assert good == ("j", "20261122T013000Z-manual-ab12")
    assert keys.job_occurrence_from(
        b"/cron/trigger/j/20261122T013000Z-manual-ab12/../../../x", keys.TRIGGERS) is None
    assert keys.job_occurrence_from(b"/cron/trigger/\xff/x", keys.TRIGGERS) is None
    assert keys.job_from(b"/cron/jobs/../x", keys.JOBS) is None
    assert keys.worker_from(b"/cron/workers/\xff") is None


def test_ghost_spec_is_invalid() -> None:
    raw = json.dumps({"name": "ghost", "schedule": "@every 1s", "command": "true"}).encode()
    with pytest.raises(BadValue, match="ghost"):
        decode_spec(b"/cron/jobs/innocent", raw)
    assert decode_spec(b"/cron/jobs/ghost", raw).name == "ghost"


@pytest.mark.parametrize("raw", [b"[" * 100_000, b"[1]", b"\xff", b'"x"', b"{"])
def test_decoders_raise_only_value_errors(raw: bytes) -> None:
    for decode in (RunRecord.decode, LockHolder.decode, json_object):
        with pytest.raises(ValueError):
            decode(raw)
    with pytest.raises(BadValue):
        decode_spec(b"/cron/jobs/a", raw)


def test_records_with_bad_fields_are_refused() -> None:
    ok = RunRecord("j", "20261122T013000Z", "running").encode()
    assert RunRecord.decode(ok).job == "j"
    for field, value in [("occurrence", "20261122T013000Z/../../x"), ("job", "../x"),
                         ("pid", "1"), ("attempt", True), ("occurrence", 5)]:
        data = json.loads(ok)
        data[field] = value
        with pytest.raises(ValueError):
            RunRecord.decode(json.dumps(data).encode())
