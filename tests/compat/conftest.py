"""Fixtures for the differential compatibility suite (real etcd vs coord).

``compat_pair`` is one fresh reference etcd plus one fresh target for the whole
session (cases use their own key prefixes and revision offsets); ``fresh_pair`` is a
new pair for a single test, for cases that depend on the whole keyspace or on
absolute revisions. ``COMPAT_TARGET=etcd`` makes the target a second real etcd.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.compat.harness import Case, Pair, compat_target, start_pair


@pytest.fixture(scope="session")
def compat_pair(tmp_path_factory: pytest.TempPathFactory, etcd_bin: str,
                etcdctl_bin: str) -> Iterator[Pair]:
    workdir = tmp_path_factory.mktemp("compat-shared")
    with start_pair(workdir, etcd_bin, etcdctl_bin, compat_target()) as pair:
        yield pair


@pytest.fixture
def fresh_pair(tmp_path: Path, etcd_bin: str, etcdctl_bin: str) -> Iterator[Pair]:
    with start_pair(tmp_path, etcd_bin, etcdctl_bin, compat_target()) as pair:
        yield pair


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
