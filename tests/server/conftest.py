"""Fixtures shared by the applier tests (test_apply*.py)."""

from __future__ import annotations

import pytest

from tests.server.reqs import Client


@pytest.fixture
def c() -> Client:
    """A fresh applier with request helpers."""
    return Client()
