"""The README's "Secure cluster", followed as written: `certs init`, three `certs member`,
the agent command on three hosts started at once, then `certs client`, raftcron's
`jobs list` and etcdctl's get with the client certificate. Then what the section promises
("every port now refuses a client ... without a certificate from this CA"): etcdctl and
raftcron without a certificate, and with one from another `certs init`, are refused.

The commands are read out of README.md at test time. The liberties, as in the README's
other recipe tests: the three hosts are three directories on 127.0.0.1, each with free
ports in place of 2379/2380 (so `10.0.0.N` becomes `127.0.0.1`, `$IP:2379` its own client
port, `10.0.0.N:2380` host N's peer port), its first line sets its own name, the data dir is
the host's, `jobs.yaml` is a job this test writes, and `raftcron` on PATH is this checkout's
CLI. Copying the files to each host is done as the README says (the CA key stays behind).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.binaries import require_binary
from tests.helpers.procs import REPO, Proc, ProcessGroup, free_port, port_open, wait_until
from tests.tls.test_server_tls import closed_on_us

pytestmark = [pytest.mark.slow, pytest.mark.etcd, pytest.mark.timeout(240)]
HOSTS = (1, 2, 3)
JOB = "secure-heartbeat"


def readme_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    start = text.index("\n## Secure cluster")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```sh\n(.*?)```", text[start:end], flags=re.S)


def lines(block: str) -> list[str]:
    return [ln for ln in block.splitlines() if ln.strip()]


def shell_env(work: Path) -> dict[str, str]:
    """PATH with `raftcron` (this checkout's CLI) and etcdctl first."""
    bin_dir = work / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "raftcron"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m scheduler.cli "$@"\n')
    shim.chmod(0o755)
    etcdctl = require_binary("etcdctl")
    return {**os.environ, "PYTHONPATH": str(REPO), "ETCDCTL_API": "3",
            "RAFTCRON_LOG_LEVEL": "info",
            "PATH": f"{bin_dir}:{Path(etcdctl).parent}:{os.environ['PATH']}"}


def sh(cwd: Path, cmd: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def ok(cwd: Path, cmd: str, env: dict[str, str]) -> str:
    r = sh(cwd, cmd, env)
    assert r.returncode == 0, f"README command failed: {cmd}\n{r.stdout}{r.stderr}"
    assert "Traceback" not in r.stdout + r.stderr, cmd
    return r.stdout


def host_script(block: str, i: int, host: Path, ports: dict[int, tuple[int, int]]) -> str:
    """Host ``i``'s copy of the README's agent block, run in the host's directory."""
    first, *rest = lines(block)
    assert first == "NAME=n1 IP=10.0.0.1", first
    text = "\n".join(rest)
    assert text.startswith("raftcron agent"), text
    text = text.replace("$IP:2379", f"$IP:{ports[i][0]}").replace("$IP:2380", f"$IP:{ports[i][1]}")
    for h, (_, pport) in ports.items():
        text = text.replace(f"10.0.0.{h}:2380", f"127.0.0.1:{pport}")
    assert "10.0.0." not in text, text
    text = text.replace("/var/lib/raftcron", str(host / "data"))
    return f"cd {host}\nNAME=n{i} IP=127.0.0.1\nexec {text}\n"


def client_command(line: str, ports: dict[int, tuple[int, int]]) -> str:
    for h, (cport, _) in ports.items():
        line = line.replace(f"https://10.0.0.{h}:2379", f"https://127.0.0.1:{cport}")
    assert "10.0.0." not in line, line
    return line


def served(port: int, ca: Path, cert: Path | None, key: Path | None) -> bool:
    """Whether a TLS client with ``cert`` (or none) gets HTTP/2 from ``port`` (False: the
    member cut it off, in the handshake or right after)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["h2"])
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        except (ssl.SSLError, ConnectionResetError):
            return False
        with tls:
            return not closed_on_us(tls)


def test_the_secure_cluster_section_as_written(procs: ProcessGroup) -> None:
    certs_block, agent_block, client_block = readme_blocks()
    work = procs.workdir
    env = shell_env(work)
    admin = work / "admin"
    admin.mkdir()

    # Five commands, the first four here: the CA and a certificate per member.
    make = lines(certs_block)
    assert make[0] == "raftcron certs init" and len(make) == 4, make
    for cmd in make:
        ok(admin, re.sub(r"10\.0\.0\.\d", "127.0.0.1", cmd), env)
    assert (admin / "certs" / "ca-key.pem").stat().st_mode & 0o777 == 0o600

    ran = work / "ran.txt"
    ports = {i: (free_port(), free_port()) for i in HOSTS}
    agents: dict[int, Proc] = {}
    for i in HOSTS:
        host = work / f"host{i}"
        (host / "certs").mkdir(parents=True)
        for name in ("ca.pem", f"member-n{i}.pem", f"member-n{i}-key.pem"):
            shutil.copy2(admin / "certs" / name, host / "certs" / name)
        (host / "jobs.yaml").write_text(
            f"jobs:\n  - name: {JOB}\n    schedule: '@every 1s'\n"
            f"    command: 'echo $RAFTCRON_OCCURRENCE >> {ran}'\n")
    # The fifth, on the three hosts at once.
    for i in HOSTS:
        script = host_script(agent_block, i, work / f"host{i}", ports)
        agents[i] = procs.spawn(f"n{i}", ["bash", "-c", script], ports[i][0], env=env)
    for i, proc in agents.items():
        wait_until(lambda p=proc, i=i: port_open(ports[i][0]) or not p.alive(), 60,
                   f"agent n{i}'s client port")
        assert proc.alive(), proc.log()
    wait_until(lambda: ran.exists() and ran.read_text().strip() != "", 60,
               "a run of the job over mutual TLS\n" + agents[1].log())
    assert all(p.alive() for p in agents.values())

    # A client's certificate, raftcron's jobs list and etcdctl's get with it.
    make_client, jobs_list, get = lines(client_block)
    ok(admin, make_client, env)
    out = ok(admin, client_command(jobs_list, ports), env)
    assert JOB in out, out
    etcdctl_get = client_command(get, ports)
    assert etcdctl_get.startswith("etcdctl "), etcdctl_get
    out = ok(admin, etcdctl_get, env)
    assert f"/cron/jobs/{JOB}" in out, out

    # Refused: no client certificate; a certificate from another `certs init`.
    ok(admin, "raftcron certs init --dir stranger && raftcron certs client admin --dir stranger",
       env)
    bounded = "etcdctl --dial-timeout=3s --command-timeout=5s"
    mine = "--cert certs/client-admin.pem --key certs/client-admin-key.pem"
    theirs = "--cert stranger/client-admin.pem --key stranger/client-admin-key.pem"
    assert mine in etcdctl_get and mine in jobs_list
    for refused in (etcdctl_get.replace(" " + mine, ""), etcdctl_get.replace(mine, theirs),
                    client_command(jobs_list, ports).replace(" " + mine, ""),
                    client_command(jobs_list, ports).replace(mine, theirs)):
        cmd = refused.replace("etcdctl", bounded, 1)
        r = sh(admin, cmd, env)
        assert r.returncode != 0, (cmd, r.stdout)
        assert JOB not in r.stdout, (cmd, r.stdout)
        assert "Traceback" not in r.stderr, (cmd, r.stderr)
        if cmd.startswith("raftcron"):
            assert r.returncode == 1, (cmd, r.stderr)
            assert r.stderr.startswith("Error: ") and len(r.stderr.splitlines()) == 1, r.stderr
    # The peer ports too: a member's certificate is served, none or another CA's is not.
    d, stranger = admin / "certs", admin / "stranger"
    pport = ports[1][1]
    assert served(pport, d / "ca.pem", d / "member-n2.pem", d / "member-n2-key.pem")
    assert not served(pport, d / "ca.pem", None, None)
    assert not served(pport, d / "ca.pem", stranger / "client-admin.pem",
                      stranger / "client-admin-key.pem")
    # ...and the cluster keeps serving the client that has one.
    assert f"/cron/jobs/{JOB}" in ok(admin, etcdctl_get, env)
    assert all(p.alive() for p in agents.values())
