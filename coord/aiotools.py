"""asyncio helpers that behave the same on every supported Python.

``asyncio.wait_for`` on Python 3.11 loses a cancellation of the waiting task when the
awaited operation completes in the same loop iteration: it returns the result and the task
carries on as if it had never been cancelled (CPython gh-86296; 3.12 rebuilt ``wait_for`` on
``asyncio.timeout``). A background loop that is stopped by cancelling it can then run
forever, and whoever awaits it hangs — a worker's graceful stop did exactly that in CI
while its lease keepalive was reading a renewal. Use :func:`within` instead; a test keeps
``asyncio.wait_for`` out of ``coord`` and ``scheduler``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(aw: Awaitable[T], timeout: float | None) -> T:
    """Await ``aw``; raise :class:`TimeoutError` after ``timeout`` seconds (cancelling it).

    A cancellation of the calling task always propagates, even when ``aw`` finishes at the
    same moment.
    """
    async with asyncio.timeout(timeout):
        return await aw
