"""``apply`` conflicts with any concurrent change of the jobs (issue 20, F12:
tests/schedsim/FINDINGS.md, seed 630).

Two operators ran ``apply --prune`` at once on an empty store: op1's txn added ``app0``;
op0's added ``app1`` and ``app2`` — its compares covered only the jobs it changed, so it was
acknowledged over a job it never saw, and the store matched neither file. The first apply
txn now also compares the whole ``/cron/jobs/`` range with what was read (no job added or
edited since, none of those found the same deleted). Against a real in-process coord
member, as ``test_claim.py``; the concurrent apply runs between this apply's read and its
txn.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from coord.client import Client
from scheduler import keys
from scheduler.admin import ApplyConflict, apply_jobs
from scheduler.claim import ClaimStore
from scheduler.spec_load import load_jobs_text
from tests.scheduler.test_claim import _run


def _file(*names: str, schedule: str = "@every 5s") -> str:
    return "jobs:\n" + "".join(
        f"  - name: {n}\n    schedule: '{schedule}'\n    command: 'true'\n" for n in names)


class _Interleaved:
    """The client, with ``hook`` run once just before the first txn (after the read)."""

    def __init__(self, client: Client, hook: Callable[[], Awaitable[Any]]) -> None:
        self._client = client
        self._hook: Callable[[], Awaitable[Any]] | None = hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def txn(self, *args: Any, **kwargs: Any) -> Any:
        if self._hook is not None:
            hook, self._hook = self._hook, None
            await hook()
        return await self._client.txn(*args, **kwargs)


async def _apply(c: Any, text: str) -> bool:
    return (await apply_jobs(c, load_jobs_text(text), prune=True, dry_run=False)).applied


async def _stored(c: Client) -> dict[str, bytes]:
    r = await c.get(keys.JOBS, prefix=True)
    return {kv.key.decode(): kv.value for kv in r.kvs}


CASES = {
    # seed 630: nothing stored; the other apply adds a job this one never saw
    "add to empty": ("", _file("app1", "app2"), _file("app0")),
    "add": (_file("a"), _file("a", "b"), _file("a", "c")),
    "edit of a job left alone": (_file("a", "b"), _file("a", "c"),
                                 _file("a", schedule="@every 7s") + _file("b")[5:]),
    "delete of a job left alone": (_file("a", "b"), _file("a", "c"), _file("b")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_concurrent_change_makes_apply_conflict(tmp_path: Path, case: str) -> None:
    before, mine, theirs = CASES[case]

    async def body(c: Client, _: Callable[[str], Awaitable[ClaimStore]]) -> None:
        if before:
            assert await _apply(c, before)
        with pytest.raises(ApplyConflict):
            await _apply(_Interleaved(c, lambda: _apply(c, theirs)), mine)
        # Run again, as the message says: the store is then exactly this file.
        assert await _apply(c, mine)
        assert set(await _stored(c)) == {keys.job_key(s.name) for s in load_jobs_text(mine)}
    _run(tmp_path, body)


def test_an_apply_with_no_concurrent_change_is_acknowledged(tmp_path: Path) -> None:
    async def body(c: Client, _: Callable[[str], Awaitable[ClaimStore]]) -> None:
        assert await _apply(c, _file("a", "b"))
        assert await _apply(_Interleaved(c, lambda: c.put("/cron/other", "x")),
                            _file("a", "c"))
        assert set(await _stored(c)) == {keys.job_key("a"), keys.job_key("c")}
    _run(tmp_path, body)
