"""The README's "Dashboard" section, followed as written: its commands run in a shell from
the checkout, the page it says to open is opened in Chromium, then Ctrl-C.

The one liberty taken: the section's agent is ``make run``'s (127.0.0.1:2379) and its
dashboard listens on 127.0.0.1:8080; this test runs its own agent and dashboard on free
ports (tests run side by side, tests/test_readme.py owns ``make run``), so those two
addresses are replaced in each command by the ones it uses.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

from tests.dashboard.browser import Browser, browser
from tests.dashboard.conftest import start_agent
from tests.dashboard.site import JOBS
from tests.helpers.procs import REPO, ProcessGroup, free_port, port_open, wait_until

__all__ = ["browser"]  # fixture

STORE, WEB = "127.0.0.1:2379", "127.0.0.1:8080"


def section(heading: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def commands(text: str) -> list[str]:
    block = re.findall(r"```sh\n(.*?)```", text, flags=re.S)[0]
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_the_readme_dashboard_section(procs: ProcessGroup, browser: Browser) -> None:
    text = section("Dashboard")
    serve, *rest = commands(text)
    assert serve.startswith(".venv/bin/raftcron dashboard "), serve
    assert f"<http://{WEB}/>" in text
    agent = start_agent(procs, "a1", JOBS)
    port = free_port()
    web = f"127.0.0.1:{port}"

    def local(cmd: str) -> str:
        return cmd.replace(STORE, agent.endpoint).replace(WEB, web)

    dash = procs.spawn("dashboard", ["bash", "-c", f"cd {REPO} && exec {local(serve)}"], port)
    wait_until(lambda: port_open(port) or not dash.alive(), 30, "the README's dashboard")
    assert dash.alive(), dash.log()
    for cmd in rest:
        res = subprocess.run(["bash", "-c", local(cmd)], cwd=REPO, capture_output=True,
                             text=True, timeout=30, check=False, env=dict(os.environ))
        assert res.returncode == 0, f"{cmd}\n{res.stdout}{res.stderr}"
        if "/api/v1/overview" in cmd:
            overview = json.loads(res.stdout)
            assert overview["workers_alive"] == 1 and overview["cluster"]["healthy"]

    page = browser.page()
    resp = page.goto(f"http://{web}/")
    assert resp is not None and resp.status == 200
    assert page.locator("h1").inner_text() == "Overview"
    page.wait_for_selector('#live[data-state="open"]')
    page.close()

    dash.popen.send_signal(signal.SIGINT)  # Ctrl-C
    assert dash.popen.wait(timeout=30) == 0, dash.log()
    assert "Traceback" not in dash.log()
