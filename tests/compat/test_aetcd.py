"""The independent client library aetcd against real etcd and the target.

aetcd runs in a subprocess (``aetcd_driver.py``) because its generated protos clash
with coord's in one protobuf descriptor pool. Both servers run the same scenarios at
the same time; each scenario's JSON result is normalised like etcdctl's ``-w json``
output (revision offsets from the scenario's own starting revision, ids, terms) and
compared.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.compat.aetcd_driver_names import SCENARIOS
from tests.compat.harness import (
    CompatMismatch,
    Normalizer,
    Pair,
    Server,
    render_diff,
    repo_python,
)
from tests.helpers.procs import REPO

pytestmark = pytest.mark.etcd

DRIVER = ["-m", "tests.compat.aetcd_driver"]  # run from the repository (cwd=REPO)


def run_driver(server: Server, prefix: str) -> dict[str, Any]:
    argv = [repo_python(), *DRIVER, "--endpoint", server.endpoint, "--prefix", prefix,
            *SCENARIOS]
    cp = subprocess.run(argv, capture_output=True, timeout=120, cwd=str(REPO), check=False)
    if cp.returncode != 0:
        return {"driver failed": {"rc": cp.returncode,
                                  "stderr": cp.stderr.decode(errors="replace")[-3000:]}}
    return json.loads(cp.stdout)


def run_driver_on(pair: Pair) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both servers at once (called from conftest's background pool, on a pair of its
    own; the ``aetcd_results`` fixture is defined there)."""
    with ThreadPoolExecutor(2) as ex:
        ref, tgt = ex.map(lambda s: run_driver(s, "aetcd"), pair.servers)
    return ref, tgt


def render(server: Server, result: dict[str, Any] | None) -> str:
    if result is None:
        return "<scenario missing>\n"
    if "steps" not in result:
        return json.dumps(result, indent=1) + "\n"
    n = Normalizer(server, int(result["base"]))
    lines = []
    for label, value in result["steps"]:
        lines.append(f"## {label}")
        tree = n.tree(value)
        if server.others and label == "members" and isinstance(tree, list):
            # COMPAT_CLUSTER: members come ordered by id, which differs between servers
            tree.sort(key=lambda m: str(m.get("name", "")) if isinstance(m, dict) else "")
        lines.append(n.scrub(json.dumps(tree, indent=1, ensure_ascii=False, sort_keys=True)))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_aetcd_scenario(aetcd_results: tuple[Pair, dict[str, Any], dict[str, Any]],
                        scenario: str) -> None:
    pair, ref, tgt = aetcd_results
    failed = ref.get("driver failed") or tgt.get("driver failed")
    a = render(pair.ref, ref.get(scenario, ref.get("driver failed")))
    b = render(pair.target, tgt.get(scenario, tgt.get("driver failed")))
    if os.environ.get("COMPAT_SHOW"):
        print(f"\n===== aetcd:{scenario} [{pair.ref.label}]\n{a}")
    if a != b:
        raise CompatMismatch(render_diff(f"aetcd:{scenario}", pair.ref.label, a,
                                         pair.target.label, b))
    assert not failed, failed


def test_driver_scenario_list_is_in_sync() -> None:
    cp = subprocess.run([repo_python(), *DRIVER, "--list"], capture_output=True,
                        timeout=60, cwd=str(REPO), check=True)
    assert cp.stdout.decode().split() == SCENARIOS
