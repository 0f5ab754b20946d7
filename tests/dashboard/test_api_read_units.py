"""The job view's next fire times: in the job's zone, DST transitions marked."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from scheduler.dashboard.api import next_fires
from scheduler.dashboard.model import JobRow
from scheduler.spec import load_jobs


def _row(tmp_path: Path, schedule: str, zone: str) -> JobRow:
    f = tmp_path / "j.yaml"
    f.write_text(f"jobs:\n  - {{name: j, schedule: '{schedule}', timezone: {zone}, "
                 "command: 'true'}\n")
    return JobRow("j", load_jobs(f)[0], "", 1, 0.0)


def test_the_first_fire_after_a_dst_change_is_marked(tmp_path: Path) -> None:
    # New York springs forward on 2027-03-14 at 02:00 (EST -05:00 → EDT -04:00).
    row = _row(tmp_path, "0 12 * * *", "America/New_York")
    fires = next_fires(row, datetime(2027, 3, 10, 0, 0, tzinfo=UTC), 10)
    assert len(fires) == 10
    assert [f["local"][:10] for f in fires][:5] == [
        "2027-03-10", "2027-03-11", "2027-03-12", "2027-03-13", "2027-03-14"]
    assert all(f["local"][11:19] == "12:00:00" for f in fires)
    assert [f["dst"] for f in fires] == [False] * 4 + [True] + [False] * 5
    assert (fires[3]["utc_offset"], fires[4]["utc_offset"]) == ("-0500", "-0400")
    assert (fires[3]["at"], fires[4]["at"]) == ("2027-03-13T17:00:00+00:00",
                                                "2027-03-14T16:00:00+00:00")


def test_no_dst_marks_in_utc(tmp_path: Path) -> None:
    row = _row(tmp_path, "*/15 * * * *", "UTC")
    fires = next_fires(row, datetime(2027, 3, 14, 0, 0, tzinfo=UTC), 10)
    assert fires[0]["at"] == "2027-03-14T00:15:00+00:00"
    assert not any(f["dst"] for f in fires)
