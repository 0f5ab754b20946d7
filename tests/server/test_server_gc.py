"""A standalone member freezes the heap it holds once it is ready to serve; in-process
members (tests, a shared process) leave the collector alone."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from coord.server.config import ServerConfig
from coord.server.server import CoordServer, freeze_startup_heap
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


def test_a_member_built_outside_a_loop_freezes_at_start(
        unfrozen: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAFTCRON_UVLOOP", "0")  # keep this process's loop policy
    server = CoordServer(_config(tmp_path))

    async def body() -> int:
        await server.start()
        try:
            return gc.get_freeze_count()
        finally:
            await server.stop(0)

    assert asyncio.run(body()) > 0


def test_a_member_built_inside_a_loop_leaves_the_collector_alone(
        unfrozen: None, tmp_path: Path) -> None:
    async def body() -> int:
        server = CoordServer(_config(tmp_path))
        await server.start()
        try:
            return gc.get_freeze_count()
        finally:
            await server.stop(0)

    assert asyncio.run(body()) == 0
