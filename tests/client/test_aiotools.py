"""``coord.aiotools.within``: a timeout that never swallows the caller's cancellation.

The race it closes hung a worker's graceful stop in CI: the lease keepalive loop was
cancelled in the same loop iteration as a renewal answer arrived, ``asyncio.wait_for``
returned the answer instead of raising, and the loop renewed the lease forever.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from coord.aiotools import within

REPO = Path(__file__).resolve().parents[2]


def _cancel_as_it_completes(wait: Callable[[asyncio.Future[int]], Awaitable[int]]) -> str:
    """Cancel a task whose awaited future gets its result in the same loop iteration."""
    async def main() -> str:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(wait(fut))
        for _ in range(3):  # let the task reach its await
            await asyncio.sleep(0)
        fut.set_result(7)
        task.cancel()
        try:
            return f"returned {await task}"
        except asyncio.CancelledError:
            return "cancelled"
    return asyncio.run(main())


def test_within_propagates_a_cancellation_that_races_completion() -> None:
    assert _cancel_as_it_completes(lambda f: within(f, 10.0)) == "cancelled"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for was fixed in Python 3.12")
def test_the_race_is_real_on_this_python() -> None:
    # The same construction against asyncio.wait_for loses the cancellation on 3.11:
    # proof that the test above exercises the race rather than passing vacuously.
    assert _cancel_as_it_completes(lambda f: asyncio.wait_for(f, 10.0)) == "returned 7"


def test_within_times_out_and_cancels_the_awaited() -> None:
    async def main() -> tuple[bool, bool]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        timed_out = False
        try:
            await within(fut, 0.01)
        except TimeoutError:
            timed_out = True
        return timed_out, fut.cancelled()
    assert asyncio.run(main()) == (True, True)


def test_within_returns_the_result() -> None:
    async def main() -> Any:
        return await within(asyncio.sleep(0, result="ok"), 1.0)
    assert asyncio.run(main()) == "ok"


def test_no_wait_for_in_the_product() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for top in ("coord", "scheduler")
        for path in sorted((REPO / top).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\basyncio\.wait_for\(", line)
    ]
    assert not offenders, f"use coord.aiotools.within instead of asyncio.wait_for: {offenders}"
