"""Locating external binaries (etcd, etcdctl) for the compatibility tests.

Under ``CI=true`` a missing binary is a failure, never a skip: CI installs the
Debian packages ``etcd-server`` and ``etcd-client`` and a silent skip would hide
a broken pipeline. Outside CI the test is skipped and the reason printed.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_binary(name: str) -> str:
    """Return the absolute path of ``name`` or fail (CI) / skip (elsewhere)."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = (
        f"{name!r} not found on PATH; install the Debian packages etcd-server and etcd-client "
        "(apt-get install -y etcd-server etcd-client)"
    )
    if in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    sys.stderr.write(f"SKIP: {reason}\n")
    pytest.skip(reason)
