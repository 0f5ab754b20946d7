"""docs/security.md "TLS", followed as written: the member with mutual TLS, etcdctl's put,
raftcron's jobs list and a worker, all with the documented flags. The liberties: the files
are certificates this test makes (under the documented names, in a scratch directory that
is the commands' working directory), free ports stand in for 2379/2380, and ``raftcron``
is this checkout's CLI."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

from tests.helpers.binaries import require_binary
from tests.helpers.procs import REPO, ProcessGroup, free_port, port_open, wait_until
from tests.tls.conftest import Certs

DOC = REPO / "docs" / "security.md"
LONG_RUNNING = ("raftcron coord serve", "raftcron --cacert ca.pem --cert client.pem "
                "--key client-key.pem worker")


def doc_commands() -> list[str]:
    text = DOC.read_text()
    section = text[text.index("\n## TLS"):]
    end = section.find("\n## ", 1)
    section = section[:end if end != -1 else len(section)]
    (block,) = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [ln for ln in block.splitlines() if ln.strip()]


def test_the_tls_section_as_written(procs: ProcessGroup, certs: Certs) -> None:
    etcdctl = require_binary("etcdctl")
    work = procs.workdir  # the spawned processes' working directory too
    for name, src in (("ca.pem", certs.ca.cert), ("server.pem", certs.server.cert),
                      ("server-key.pem", certs.server.key), ("client.pem", certs.client.cert),
                      ("client-key.pem", certs.client.key)):
        shutil.copy(src, work / name)
    cport, pport = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "ETCDCTL_API": "3"}
    commands = doc_commands()
    assert commands[0].startswith(LONG_RUNNING[0]) and commands[-1].startswith(LONG_RUNNING[1])
    outputs = []
    for n, line in enumerate(commands):
        words = shlex.split(line.replace("2379", str(cport)).replace("2380", str(pport)))
        argv = ([sys.executable, "-m", "scheduler.cli", *words[1:]] if words[0] == "raftcron"
                else [etcdctl, *words[1:]])
        if line.startswith(LONG_RUNNING):
            proc = procs.spawn(f"doc{n}", argv, cport, env=env)
            if n == 0:
                wait_until(lambda p=proc: port_open(cport) or not p.alive(), 30, "the member")
                assert proc.alive(), proc.log()
            else:
                wait_until(lambda p=proc: "worker.registered" in p.log() or not p.alive(), 30,
                           "the worker registered over TLS")
                assert proc.alive(), proc.log()
            continue
        r = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True,
                           timeout=30, check=False)
        assert r.returncode == 0, (line, r.stderr)
        outputs.append(r.stdout)
    assert outputs[0].strip() == "OK"  # etcdctl put
    assert outputs[1].strip() == "jobs: none", outputs[1]  # jobs list, over mutual TLS
