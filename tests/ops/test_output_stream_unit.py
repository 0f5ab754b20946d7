"""The follower's printing and the doctor's skew inference, on their own."""

from __future__ import annotations

from scheduler.doctor import Stamp, skew
from scheduler.output_stream import TAIL_BYTES, Chunk, Printer


def test_printer_prints_each_byte_once_and_says_gaps() -> None:
    got: list[str] = []
    p = Printer(got.append)
    p.show(Chunk(1, 6, "a\nb\nc\n"))
    p.show(Chunk(1, 6, "a\nb\nc\n"))  # the same value again: nothing new
    p.show(Chunk(1, 8, "b\nc\nd\n"))  # only the newest bytes, shifted window
    assert "".join(got) == "a\nb\nc\nd\n"
    got.clear()
    big = "x" * TAIL_BYTES
    p.show(Chunk(1, 8 + 3 * TAIL_BYTES, big))  # the follower fell behind
    assert got == [f"[... {2 * TAIL_BYTES} bytes not shown ...]\n", big]
    got.clear()
    p.show(Chunk(2, 3, "r1\n"))  # a retry starts over
    assert got == ["--- attempt 2 ---\n", "r1\n"]


def test_skew_is_found_from_store_order_and_from_now() -> None:
    now = 1_000_000.0
    fine = [Stamp(10, "a", now - 30, "registered"), Stamp(11, "b", now - 29, "registered"),
            Stamp(12, "a", now - 1, "claimed")]
    assert skew(fine, now, 5.0) == []
    behind = [*fine, Stamp(13, "c", now - 60, "claimed")]  # later write, earlier time
    [f] = skew(behind, now, 5.0)
    assert "a and c" in f.message and "59.0s apart" in f.message
    ahead = [*fine, Stamp(13, "d", now + 90, "registered")]
    [g] = skew(ahead, now, 5.0)
    assert "d's clock is at least 90.0s ahead" in g.message
    # the same worker's own writes never count as skew against itself
    assert skew([Stamp(1, "a", now, "x"), Stamp(2, "a", now - 60, "y")], now, 5.0) == []


def test_doctor_overdue_window_is_expect_or_periods() -> None:
    """A job's ``expect: {succeed_within}`` is its overdue window; without it, the doctor
    waits ``--overdue-periods`` of the job's period."""
    from scheduler.doctor import Options, _window
    from scheduler.spec import load_jobs_text

    with_expect, plain = load_jobs_text(
        "jobs:\n"
        "  - {name: a, schedule: '@every 1m', command: [true], expect: {succeed_within: 2h}}\n"
        "  - {name: b, schedule: '@every 1m', command: [true]}\n")
    assert _window(with_expect, Options()) == 7200.0
    assert _window(plain, Options(overdue_periods=3)) == 180.0
