"""docs/api.md, followed literally: its start commands, then every `sh` block, each run
as a script; each answer has the fields of the JSON example that follows it.

The liberties taken, all about ports (the suite runs beside other tests): the documented
addresses (127.0.0.1:2379, :8080, :8081) are replaced by free ones, and the agent is given
a free peer port; it runs in a scratch directory holding jobs.example.yaml.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import Any

from tests.helpers.procs import REPO, ProcessGroup, free_port, port_open, wait_until

DOC = REPO / "docs" / "api.md"


def _blocks(text: str) -> list[tuple[str, str]]:
    """Every fenced block as (language, body), in order."""
    return re.findall(r"```(\w+)\n(.*?)```", text, flags=re.S)


def _json_docs(text: str) -> list[Any]:
    decoder, docs, at = json.JSONDecoder(), [], 0
    text = text.strip()
    while at < len(text):
        doc, at = decoder.raw_decode(text, at)
        docs.append(doc)
        while at < len(text) and text[at].isspace():
            at += 1
    return docs


def _same_fields(got: Any, example: Any, where: str) -> None:
    """The top-level fields, and those of the first item of each list of objects."""
    assert isinstance(got, dict) and isinstance(example, dict), where
    assert set(got) == set(example), f"{where}: {sorted(got)} != {sorted(example)}"
    for k, v in example.items():
        if isinstance(v, list) and v and isinstance(v[0], dict) and got[k]:
            assert set(got[k][0]) == set(v[0]), f"{where} [{k}]: {sorted(got[k][0])}"


def test_every_documented_command_runs(procs: ProcessGroup) -> None:
    work = procs.workdir / "docs"
    work.mkdir()
    shutil.copy2(REPO / "jobs.example.yaml", work / "jobs.example.yaml")
    ports = {"2379": free_port(), "8080": free_port(), "8081": free_port()}

    def local(cmd: str) -> str:
        for doc_port, port in ports.items():
            cmd = cmd.replace(f"127.0.0.1:{doc_port}", f"127.0.0.1:{port}")
        return cmd

    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
           "PYTHONPATH": str(REPO)}
    env.pop("RAFTCRON_ENDPOINTS", None)
    blocks = _blocks(DOC.read_text())
    start = [line.removesuffix("&").strip() for line in blocks[0][1].splitlines()
             if line.strip()]
    assert start[0].startswith("raftcron agent") and start[1].startswith("raftcron dashboard")
    agent_cmd = local(start[0]) + (f" --listen-client 127.0.0.1:{ports['2379']}"
                                   f" --listen-peer 127.0.0.1:{free_port()}")
    procs.spawn("agent", ["bash", "-c", f"cd {work} && exec {agent_cmd}"], ports["2379"],
                env=env)
    procs.spawn("dashboard", ["bash", "-c", f"cd {work} && exec {local(start[1])}"],
                ports["8081"], env=env)
    for name in ("8080", "8081"):
        wait_until(lambda n=name: port_open(ports[n]), 60,  # type: ignore[misc]
                   f"the documented dashboard on :{name}")

    def heartbeat_ran() -> bool:
        r = subprocess.run(["curl", "-s", f"http://127.0.0.1:{ports['8080']}/api/v1/jobs/"
                            "heartbeat"], capture_output=True, text=True, check=False)
        try:
            return any(x["status"] == "succeeded" for x in json.loads(r.stdout)["runs"])
        except (ValueError, KeyError):
            return False
    wait_until(heartbeat_ran, 60, "a heartbeat run", step=0.5)
    ran = 0
    for i, (lang, body) in enumerate(blocks):
        if lang != "sh" or i == 0:
            continue
        r = subprocess.run(["bash", "-c", local(body)], cwd=work, env=env, capture_output=True,
                           text=True, timeout=60, check=False)
        ran += 1
        example_lang, example = blocks[i + 1]
        if example_lang == "text":  # the event stream, until curl's --max-time (exit 28)
            assert r.returncode == 28 and "event: ready\ndata: " in r.stdout, r
            continue
        assert r.returncode == 0, f"{body}\n{r.stdout}{r.stderr}"
        assert example_lang == "json", body
        want = _json_docs(example)[0]
        for got in _json_docs(r.stdout):
            _same_fields(got, want, body.strip())
    assert ran == 9  # errors, overview, jobs, job, run, locks, workers, cluster, events
