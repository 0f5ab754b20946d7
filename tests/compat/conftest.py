"""Fixtures for the differential compatibility suite (real etcd vs coord).

``compat_pair`` is one fresh reference etcd plus one fresh target for the whole
session (cases use their own key prefixes and revision offsets); ``fresh_pair`` is a
new pair for a single test, for cases that depend on the whole keyspace or on
absolute revisions. ``COMPAT_TARGET=etcd`` makes the target a second real etcd.

For the run-time budget (< 90 s on 2 cores), work that does not touch the shared
pair starts in the background as soon as the shared pair is requested: the fresh
pairs the selected tests will need, and the aetcd driver on a pair of its own (its
writes would otherwise shift the shared pair's revisions under running cases).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.compat.harness import Case, Pair, compat_target, open_pair


class Prestarted:
    """Background starts of pairs (and of the aetcd run); everything is closed at the
    end of the session, whether or not a test took it."""

    def __init__(self, basedir: Path, etcd_bin: str, etcdctl_bin: str, fresh: int,
                 aetcd: bool) -> None:
        self.basedir, self.etcd_bin, self.etcdctl_bin = basedir, etcd_bin, etcdctl_bin
        # at most 3 background starts at once: each coord start is a CPU-heavy import
        self.ex = ThreadPoolExecutor(max(1, min(3, fresh + int(aetcd))))
        self.lock = threading.Lock()
        self.opened: list[Pair] = []
        self.n = 0
        self.fresh: list[Future[Pair]] = [self.ex.submit(self.open) for _ in range(fresh)]
        self.aetcd: Future[Any] | None = self.ex.submit(self.run_aetcd) if aetcd else None

    def open(self) -> Pair:
        with self.lock:
            self.n += 1
            workdir = self.basedir / f"pair{self.n}"
        pair = open_pair(workdir, self.etcd_bin, self.etcdctl_bin, compat_target())
        with self.lock:
            self.opened.append(pair)
        return pair

    def take_fresh(self) -> Pair:
        with self.lock:
            fut = self.fresh.pop(0) if self.fresh else None
        return fut.result() if fut is not None else self.open()

    def run_aetcd(self) -> tuple[Pair, dict[str, Any], dict[str, Any]]:
        from tests.compat.test_aetcd import run_driver_on

        pair = self.open()
        try:
            ref, tgt = run_driver_on(pair)
        finally:
            pair.close()
        return pair, ref, tgt

    def close(self) -> None:
        self.ex.shutdown(wait=True, cancel_futures=True)
        with self.lock:
            for pair in self.opened:
                pair.close()


# Closers of the session-wide compat servers: run as soon as the last compat test is
# done, so that the servers don't keep running (and using CPU) through the rest of a
# full ``make test`` session. The fixtures' own finalizers close them again (no-op).
_CLOSE_AFTER_COMPAT: list[Callable[[], None]] = []


def _is_compat(item: pytest.Item | None) -> bool:
    return item is not None and "tests/compat/" in item.nodeid


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if _is_compat(item) and not _is_compat(nextitem):
        while _CLOSE_AFTER_COMPAT:
            _CLOSE_AFTER_COMPAT.pop()()


def _uses(items: list[pytest.Item], fixture: str) -> int:
    return sum(1 for it in items if fixture in getattr(it, "fixturenames", ()))


@pytest.fixture(scope="session")
def prestarted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               etcd_bin: str, etcdctl_bin: str) -> Iterator[Prestarted]:
    items = request.session.items
    pool = Prestarted(tmp_path_factory.mktemp("compat-pool"), etcd_bin, etcdctl_bin,
                      fresh=_uses(items, "fresh_pair"), aetcd=_uses(items, "aetcd_results") > 0)
    _CLOSE_AFTER_COMPAT.append(pool.close)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="session")
def compat_pair(tmp_path_factory: pytest.TempPathFactory, etcd_bin: str,
                etcdctl_bin: str, prestarted: Prestarted) -> Iterator[Pair]:
    workdir = tmp_path_factory.mktemp("compat-shared")
    pair = open_pair(workdir, etcd_bin, etcdctl_bin, compat_target())
    _CLOSE_AFTER_COMPAT.append(pair.close)
    try:
        yield pair
    finally:
        pair.close()


@pytest.fixture
def fresh_pair(prestarted: Prestarted) -> Iterator[Pair]:
    pair = prestarted.take_fresh()
    try:
        yield pair
    finally:
        pair.close()


@pytest.fixture(scope="session")
def aetcd_results(prestarted: Prestarted) -> tuple[Pair, dict[str, Any], dict[str, Any]]:
    if prestarted.aetcd is None:  # pragma: no cover - collected after the pool started
        prestarted.aetcd = prestarted.ex.submit(prestarted.run_aetcd)
    return prestarted.aetcd.result()


def case_name(request: pytest.FixtureRequest) -> str:
    """A key prefix unique to the running test (parametrisation included)."""
    return "c-" + re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name.removeprefix("test_"))


@pytest.fixture
def compat(request: pytest.FixtureRequest, compat_pair: Pair) -> Callable[..., Case]:
    """``with compat() as c:`` — a differential case on the shared pair, compared (and
    failed with a diff) when the ``with`` block ends, i.e. inside the test call."""

    def make(suffix: str = "") -> Case:
        return compat_pair.case(case_name(request) + suffix)

    return make


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the aetcd comparisons after the other compat tests, so that the background
    aetcd run overlaps them instead of being waited for first."""
    compat_idx = [i for i, it in enumerate(items) if "aetcd_results" not in
                  getattr(it, "fixturenames", ()) and "tests/compat/" in it.nodeid]
    aetcd = [it for it in items if "aetcd_results" in getattr(it, "fixturenames", ())]
    if not aetcd or not compat_idx:
        return
    last = items[compat_idx[-1]]
    rest = [it for it in items if it not in aetcd]
    pos = rest.index(last) + 1
    items[:] = rest[:pos] + aetcd + rest[pos:]
