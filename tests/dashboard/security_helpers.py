"""Helpers of the dashboard action and auth tests: an HTTP client that keeps cookies as a
browser does (and can pretend to be another site), the CLI as a user runs it, and the
dashboard process started with a store identity of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from typing import Any

from tests.dashboard.conftest import ENV, Dashboard, start_agent
from tests.helpers.procs import REPO, ProcessGroup, free_port, port_open, wait_until


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kw: Any) -> None:
        return None


@dataclass
class Reply:
    status: int
    body: Any
    """Decoded JSON, or the text."""
    headers: Any

    @property
    def code(self) -> str | None:
        """The API error code, if this is an API error."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return str(self.body["error"].get("code"))
        return None


@dataclass
class Web:
    """One browser: a cookie jar and the dashboard's URL."""

    url: str
    jar: CookieJar = field(default_factory=CookieJar)

    def __post_init__(self) -> None:
        self._open = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect).open

    @property
    def origin(self) -> str:
        return self.url

    def send(self, method: str, path: str, body: Any = None, *,
             headers: dict[str, str] | None = None, form: dict[str, str] | None = None,
             raw: bytes | None = None) -> Reply:
        hdrs = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with self._open(req, timeout=30) as resp:
                status, text, got = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as err:
            status, text, got = err.code, err.read(), err.headers
        try:
            decoded: Any = json.loads(text)
        except ValueError:
            decoded = text.decode(errors="replace")
        return Reply(status, decoded, got)

    def get(self, path: str, **kw: Any) -> Reply:
        return self.send("GET", path, **kw)

    def csrf(self) -> str:
        """This browser's CSRF token (and its cookie, on the first call)."""
        reply = self.get("/api/v1/session")
        assert reply.status == 200, reply
        return str(reply.body["csrf_token"])

    def post(self, path: str, body: Any = None, *, token: str | None = "auto",
             origin: str | None = "same", **kw: Any) -> Reply:
        """POST as the dashboard's own page would: its Origin and the CSRF token (unless
        told otherwise: ``origin=None`` sends none, ``token=None`` sends none)."""
        headers = dict(kw.pop("headers", {}))
        if origin is not None:
            headers["Origin"] = self.origin if origin == "same" else origin
        if token == "auto":
            token = self.csrf()
        if token is not None:
            headers["X-CSRF-Token"] = token
        return self.send("POST", path, body, headers=headers, **kw)

    def login(self, user: str, password: str) -> Reply:
        return self.post("/api/v1/login", {"user": user, "password": password}, token=None)

    def cookie(self) -> str | None:
        for c in self.jar:
            if c.name == "raftcron_session":
                return c.value
        return None


def cli(endpoint: str, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    """`raftcron [--user USER] ARGS --endpoints ENDPOINT` as a user runs it."""
    ident = ["--user", user] if user else []
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *ident, *args,
                           "--endpoints", endpoint], capture_output=True, text=True,
                          check=False, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))


def cli_json(endpoint: str, *args: str, user: str | None = None) -> Any:
    res = cli(endpoint, *args, "-o", "json", user=user)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def start_dashboard_as(procs: ProcessGroup, endpoints: str, user: str | None) -> Dashboard:
    """`raftcron [--user USER] dashboard --endpoints ... --listen 127.0.0.1:<free>`."""
    port = free_port()
    ident = ["--user", user] if user else []
    argv = [sys.executable, "-m", "scheduler.cli", *ident, "dashboard", "--endpoints",
            endpoints, "--listen", f"127.0.0.1:{port}"]
    proc = procs.spawn("dashboard", argv, port, env=ENV)
    wait_until(lambda: port_open(port) or not proc.alive(), 30, f"dashboard on :{port}")
    assert proc.alive(), proc.log()
    return Dashboard(proc, f"http://127.0.0.1:{port}")


def audit(endpoint: str, job: str, user: str | None = None) -> list[tuple[str, str]]:
    """(who, action) of the audit records naming ``job``, newest first."""
    return [(r["who"], r["action"])
            for r in cli_json(endpoint, "audit", "--job", job, user=user)]


ROOT_PW = "r00t-dash-S3cret"
USERS = {"adm": "raftcron-admin", "view": "raftcron-viewer", "dash": "raftcron-viewer",
         "wkr": "raftcron-worker", "nobody": None}
"""The test users (password ``<name>-pw``) and their roles: ``dash`` is the dashboard's
own identity for its live view, ``nobody`` has no role."""


def etcdctl(bin_: str, ep: str, *args: str) -> None:
    res = subprocess.run([bin_, f"--endpoints={ep}", "--command-timeout=5s", *args],
                         capture_output=True, text=True, timeout=30, check=False,
                         env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, (args, res.stdout, res.stderr)


def enable_auth(ctl: str, ep: str) -> None:
    """root, raftcron's roles (`raftcron auth bootstrap`), the :data:`USERS`, auth on."""
    etcdctl(ctl, ep, "user", "add", f"root:{ROOT_PW}")
    boot = cli(ep, "auth", "bootstrap")
    assert boot.returncode == 0, boot.stderr
    for user, role in USERS.items():
        etcdctl(ctl, ep, "user", "add", f"{user}:{user}-pw")
        if role:
            etcdctl(ctl, ep, "user", "grant-role", user, role)
    etcdctl(ctl, ep, "auth", "enable")


def spawn_agent(procs: ProcessGroup, name: str, jobs: str | None,
                *ident: str) -> tuple[Any, str]:
    """`raftcron [IDENT] agent` (single node, ``jobs`` applied at start if given), waited
    for; the process and its client endpoint. Ports and data dir are kept across calls by
    name (a restart)."""
    ports = procs.workdir / f"{name}.ports"
    if not ports.exists():
        ports.write_text(f"{free_port()} {free_port()}")
    cport, pport = (int(p) for p in ports.read_text().split())
    proc = start_agent(procs, name, jobs, ident=ident, ports=(cport, pport))
    return proc, f"127.0.0.1:{cport}"
