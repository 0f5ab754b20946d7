"""A member that owns its process (the CLI builds it with ``freeze_heap``) freezes the heap
it holds once it is ready to serve; in-process members (tests, a shared process) leave the
collector alone."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from coord.process import freeze_startup_heap
from coord.server.config import ServerConfig
from coord.server.server import CoordServer
from tests.helpers.member import member_config


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _config(tmp_path: Path) -> ServerConfig:
    return member_config(tmp_path / "n1")


def test_freeze_startup_heap_freezes_and_can_be_turned_off(
        unfrozen: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAFTCRON_GC_FREEZE", "0")
    assert freeze_startup_heap() is False
    assert gc.get_freeze_count() == 0
    monkeypatch.delenv("RAFTCRON_GC_FREEZE")
    assert freeze_startup_heap() is True
    assert gc.get_freeze_count() > 0


def test_a_member_the_cli_builds_freezes_at_start(unfrozen: None, tmp_path: Path) -> None:
    server = CoordServer(_config(tmp_path), freeze_heap=True)

    async def body() -> int:
        await server.start()
        try:
            return gc.get_freeze_count()
        finally:
            await server.stop(0)

    assert asyncio.run(body()) > 0


def test_a_member_built_by_default_leaves_the_collector_alone(
        unfrozen: None, tmp_path: Path) -> None:
    async def body() -> int:
        server = CoordServer(_config(tmp_path))
        await server.start()
        try:
            return gc.get_freeze_count()
        finally:
            await server.stop(0)

    assert asyncio.run(body()) == 0
