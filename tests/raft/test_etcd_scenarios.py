"""etcd-io/raft's datadriven scenarios that apply to this core, ported as our own scenario
files (``scenarios_etcd/*.txt``, same format as ``scenarios/``; see test_scenarios.py).

Each file names the etcd-io/raft testdata scenario it ports and says how it was adapted:
this core sends a node's responses only after the Ready that holds its writes is
persisted (``messages_after_persist``), takes one Ready at a time, and has no
asynchronous storage-write messages, so those scenarios are restated through the
``ready`` / ``persist`` / ``advance`` steps of ``ready_steps.py``.
``RAFT_REWRITE=1`` regenerates the expected outputs, as for ``scenarios/``.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from tests.raft.ready_steps import SteppedEnv, run_command
from tests.raft.test_scenarios import parse, render

SCENARIOS = Path(__file__).parent / "scenarios_etcd"
REWRITE = os.environ.get("RAFT_REWRITE", "") not in ("", "0")


def run_file(path: Path) -> tuple[str, str]:
    blocks, trailer = parse(path.read_text())
    env = SteppedEnv()
    outputs = []
    for b in blocks:
        try:
            outputs.append(run_command(env, b.command))
        except Exception as e:
            raise AssertionError(f"{path.name}:{b.lineno}: {b.command!r} raised {e!r}") from e
    expected = render(blocks, [b.expected for b in blocks], trailer)
    return expected, render(blocks, outputs, trailer)


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.txt")), ids=lambda p: p.stem)
def test_etcd_scenario(path: Path) -> None:
    expected, actual = run_file(path)
    if REWRITE:
        path.write_text(actual)
        return
    if expected != actual:
        diff = "\n".join(
            difflib.unified_diff(
                expected.splitlines(), actual.splitlines(), "expected", "actual", lineterm=""
            )
        )
        pytest.fail(f"{path.name} differs (RAFT_REWRITE=1 to accept):\n{diff}")


#: The etcd-io/raft testdata scenarios ported here (issue 20, item 7).
PORTED = {
    "async_storage_writes",
    "async_storage_writes_append_aba_race",
    "commit_index_regression",
    "heartbeat_resp_recovers_from_probing",
    "lagging_commit",
    "probe_and_replicate",
    "replicate_pause",
    "single_node",
    "slow_follower_after_compaction",
    "snapshot_succeed_via_app_resp",
    "snapshot_succeed_via_app_resp_behind",
}


def test_every_port_is_present() -> None:
    assert {p.stem for p in SCENARIOS.glob("*.txt")} == PORTED
