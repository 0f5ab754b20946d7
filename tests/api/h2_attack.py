"""Raw-socket HTTP/2 attackers and the watchers of a member under attack, for
tests/api/test_h2_attacks.py: a client that gets a key every half second, and a sampler of
the member's resident memory (``VmRSS`` in ``/proc/<pid>/status``). :class:`Target` is the
member attacked, in plaintext or over TLS (a test CA, ALPN ``h2``)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from coord.pb import rpc_pb2, rpc_pb2_grpc
from coord.rpc.h2 import hpack
from coord.rpc.h2.server import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    SETTINGS_INITIAL_WINDOW_SIZE,
    WINDOW_UPDATE,
    frame,
    grpc_message,
)
from tests.helpers.procs import Proc

CANCEL = 8
RANGE = b"/etcdserverpb.KV/Range"
MIN_GETS = 4
PUT = b"/etcdserverpb.KV/Put"


def request_headers(path: bytes) -> bytes:
    return b"".join(hpack.encode_literal(k, v) for k, v in (
        (b":method", b"POST"), (b":scheme", b"http"), (b":path", path),
        (b":authority", b"x"), (b"content-type", b"application/grpc"), (b"te", b"trailers")))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass
class Watch:
    """While running: a get every half second on its own connection (each must answer
    within ``get_timeout`` seconds), and the member's RSS every 50 ms."""

    endpoint: str
    pid: int
    credentials: grpc.ChannelCredentials | None = None
    """TLS: the test CA to trust (None: plaintext)."""
    get_timeout: float = 5.0
    gets: int = 0
    failures: list[str] = field(default_factory=list)
    max_rss_kib: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _get_loop(self) -> None:
        with _channel(self.endpoint, self.credentials) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            while not self._stop.is_set():
                try:
                    kv.Range(rpc_pb2.RangeRequest(key=b"probe"), timeout=self.get_timeout)
                    self.gets += 1
                except grpc.RpcError as err:
                    self.failures.append(f"{err.code().name}: {err.details()}")
                self._stop.wait(0.5)

    def _rss_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.max_rss_kib = max(self.max_rss_kib, rss_kib(self.pid))
            self._stop.wait(0.05)

    def __enter__(self) -> Watch:
        for target in (self._get_loop, self._rss_loop):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        # Observe at least MIN_GETS gets (attacks that the server ends fast are over
        # before the first ones are due).
        deadline = time.monotonic() + 15.0
        while self.gets + len(self.failures) < MIN_GETS and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.get_timeout + 5)


@dataclass
class Attacker:
    """One raw HTTP/2 connection (reopened whenever the server closes it) that drains what
    the server sends, noting GOAWAY codes and connection credit."""

    port: int
    settings: bytes = b""
    tls: ssl.SSLContext | None = None
    """Connect over TLS with this context (None: plaintext h2c)."""
    goaways: list[int] = field(default_factory=list)
    resets: list[int] = field(default_factory=list)
    settings_seen: dict[int, int] = field(default_factory=dict)
    """Error codes of the RST_STREAM frames received."""
    closed_by_server: int = 0
    sock: socket.socket | None = None
    conn_window: int = 65_535
    _buf: bytearray = field(default_factory=bytearray)

    def connect(self) -> None:
        self.sock = connect(self.port, self.tls)
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, self.settings))
        self.conn_window = 65_535
        self._buf.clear()

    def send(self, data: bytes) -> bool:
        """Send; False (and reconnect) when the server closed the connection."""
        assert self.sock is not None
        try:
            self.sock.sendall(data)
        except OSError:
            self._lost()
            return False
        return self.drain()

    def drain(self, wait: float = 0.0) -> bool:
        """Read what the server sent: for up to ``wait`` seconds for the first bytes, then
        whatever is there without waiting (a timeout of 0: non-blocking, TLS too)."""
        assert self.sock is not None
        self.sock.settimeout(wait)
        try:
            while True:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    self._lost()
                    return False
                self._parse(chunk)
                self.sock.settimeout(0.0)
        except (BlockingIOError, TimeoutError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True
        except OSError:
            self._lost()
            return False
        finally:
            if self.sock is not None:
                self.sock.settimeout(5)

    def _parse(self, chunk: bytes) -> None:
        buf = self._buf
        buf += chunk
        pos = 0
        while len(buf) - pos >= 9:
            length = int.from_bytes(buf[pos:pos + 3], "big")
            if len(buf) - pos < 9 + length:
                break
            kind, stream = buf[pos + 3], int.from_bytes(buf[pos + 5:pos + 9], "big")
            payload = buf[pos + 9:pos + 9 + length]
            if kind == GOAWAY and len(payload) >= 8:
                self.goaways.append(int.from_bytes(payload[4:8], "big"))
            elif kind == SETTINGS and not buf[pos + 4] & 1:
                for i in range(0, length - 5, 6):
                    key, value = struct.unpack_from(">HI", payload, i)
                    self.settings_seen[key] = value
            elif kind == RST_STREAM and length == 4:
                self.resets.append(int.from_bytes(payload, "big"))
            elif kind == WINDOW_UPDATE and stream == 0 and length == 4:
                self.conn_window += int.from_bytes(payload, "big") & 0x7FFFFFFF
            pos += 9 + length
        del buf[:pos]

    def _lost(self) -> None:
        self.closed_by_server += 1
        if self.sock is not None:
            self.sock.close()
        self.connect()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def connect(port: int, tls: ssl.SSLContext | None) -> socket.socket:
    """A TCP connection to the member on 127.0.0.1 (no delay), TLS-wrapped when ``tls``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def _channel(endpoint: str, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
    return (grpc.insecure_channel(endpoint) if credentials is None
            else grpc.secure_channel(endpoint, credentials))


@dataclass
class Target:
    """The member under attack: its process, and the CA to trust when it serves TLS."""

    proc: Proc
    cacert: Path | None = None

    @property
    def endpoint(self) -> str:
        return self.proc.endpoint

    @property
    def pid(self) -> int:
        return self.proc.popen.pid

    @property
    def port(self) -> int:
        return self.proc.client_port

    def alive(self) -> bool:
        return self.proc.alive()

    def log(self) -> str:
        return self.proc.log()

    def tls(self) -> ssl.SSLContext | None:
        if self.cacert is None:
            return None
        context = ssl.create_default_context(cafile=str(self.cacert))
        context.set_alpn_protocols(["h2"])
        return context

    def credentials(self) -> grpc.ChannelCredentials | None:
        if self.cacert is None:
            return None
        return grpc.ssl_channel_credentials(root_certificates=self.cacert.read_bytes())

    def channel(self) -> grpc.Channel:
        return _channel(self.endpoint, self.credentials())

    def attacker(self, settings: bytes = b"") -> Attacker:
        return Attacker(self.port, settings, tls=self.tls())

    def watch(self) -> Watch:
        return Watch(self.endpoint, self.pid, self.credentials())


def run_for(seconds: float, step: Callable[[], bool]) -> int:
    """Call ``step`` until it returns False or ``seconds`` pass; returns the call count."""
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline and step():
        n += 1
    return n


def rapid_reset_batch(first_id: int, count: int) -> bytes:
    """``count`` calls, each HEADERS + a Range request, cancelled at once (RST_STREAM)."""
    block = request_headers(RANGE)
    body = grpc_message(rpc_pb2.RangeRequest(key=b"probe").SerializeToString())
    out = []
    for i in range(count):
        sid = first_id + 2 * i
        out.append(frame(HEADERS, END_HEADERS, sid, block) + frame(DATA, END_STREAM, sid, body)
                   + frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL)))
    return b"".join(out)


def ping_batch(count: int) -> bytes:
    return frame(PING, 0, 0, b"12345678") * count


def settings_batch(count: int) -> bytes:
    return frame(SETTINGS, 0, 0, struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, 65_535)) * count


def indexed_header_bomb(stream_id: int, size: int = 64 << 10) -> bytes:
    """A header block of ``size`` one-byte indexed references (``:method GET``), split into
    HEADERS + CONTINUATION frames of 16 KiB."""
    block = b"\x82" * size
    pieces = [block[i:i + 16_384] for i in range(0, size, 16_384)]
    out = [frame(HEADERS, END_STREAM | (0 if len(pieces) > 1 else END_HEADERS), stream_id,
                 pieces[0])]
    for i, piece in enumerate(pieces[1:], 1):
        out.append(frame(CONTINUATION, END_HEADERS if i == len(pieces) - 1 else 0, stream_id,
                         piece))
    return b"".join(out)
