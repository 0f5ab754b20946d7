"""CPU per unary call through coord's RPC runtime alone, in-process: no socket, no client.

``h2``: one server :class:`~coord.rpc.h2.connection.Connection` fed HEADERS + DATA +
WINDOW_UPDATE per call (a constant handler, a fake transport), the path of every network
call up to the handler and back. The request's header block is what grpc-go and grpcio
send after their first call: every field indexed in HPACK's dynamic table but the call's
``grpc-timeout`` (a literal; the first call adds the fields to the table). ``--tls`` puts
asyncio's TLS (``sslproto``, TLS 1.3, ALPN ``h2``) under the connection: the client's
records are encrypted before the clock starts, so the time is the server's alone
(decrypting the request, encrypting the answer). ``local``: a
:class:`~coord.rpc.local.LocalChannel` unary call with a deadline (an agent's worker
calling its own member). Prints the ``process_time`` per call in µs, the best of
``--repeat`` rounds of ``--calls`` calls.

``--against DIR`` compares with another source tree on the same machine state: every round
is a fresh process, alternately this tree's runtime and ``DIR``'s (the bench itself is this
file in both), and every round's figure is printed with each tree's best and median.
Differences below about 0.5 µs are within the spread of identical runs on a shared
machine."""

from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto
import os
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from coord.rpc.h2 import hpack
from coord.rpc.h2.server import (
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PREFACE,
    SETTINGS,
    WINDOW_UPDATE,
    Connection,
    H2Server,
    frame,
    grpc_message,
)
from coord.rpc.local import LocalTarget


class _Handler:
    request_streaming = False
    response_streaming = False
    request_deserializer = None
    response_serializer = None
    unary_stream = stream_unary = stream_stream = None

    async def unary_unary(self, request: bytes, context: Any) -> bytes:
        return b"answer"


class _Transport:
    def __init__(self) -> None:
        self.written = 0
        self.closed = False
        self.chunks: list[bytes] = []
        self.keep = False
        """Keep what is written (the TLS handshake's records), not only count it."""

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if self.keep:
            self.chunks.append(bytes(data))

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return default

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


_LITERAL = b"".join(hpack.encode_literal(k, v) for k, v in (
    (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/s/M"),
    (b"content-type", b"application/grpc")))
"""``--headers literal``: four fields as literals without indexing, no deadline (the
request of this bench's first version, so its figures compare with older ones)."""

_FIELDS = ((b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/s/M"),
           (b":authority", b"127.0.0.1:2379"), (b"content-type", b"application/grpc"),
           (b"user-agent", b"grpc-go/1.26.0"), (b"te", b"trailers"))
"""``--headers indexed``: a gRPC client's request fields (grpc-go's, in its order)."""


def _incremental(name: bytes, value: bytes) -> bytes:
    """A literal field with incremental indexing and a literal name (RFC 7541 6.2.1)."""
    return (b"\x40" + hpack.encode_int(len(name), 7) + name
            + hpack.encode_int(len(value), 7) + value)


_FIRST_BLOCK = b"".join(_incremental(k, v) for k, v in _FIELDS)
"""The first call adds every field to the dynamic table (entry 62 is the newest)..."""
_INDEXED = b"".join(hpack.encode_indexed(62 + len(_FIELDS) - 1 - i)
                    for i in range(len(_FIELDS)))
"""...every later call sends them indexed, and its deadline as a literal."""
_TIMEOUTS = [hpack.encode_literal(b"grpc-timeout", b"%dm" % (4900 + i % 100))
             for i in range(100)]
_HANDLER = _Handler()


def _calls_bytes(n: int, headers: str) -> list[bytes]:
    """The frames of ``n + 1`` calls (the first is not timed)."""
    message = grpc_message(b"q")
    credit = frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 100))
    out = []
    for i in range(n + 1):
        block = (_LITERAL if headers == "literal" else
                 (_FIRST_BLOCK if i == 0 else _INDEXED) + _TIMEOUTS[i % 100])
        out.append(frame(HEADERS, END_HEADERS, 2 * i + 1, block)
                   + frame(DATA, END_STREAM, 2 * i + 1, message) + credit)
    return out


class _TLSClient:
    """The client's end of an in-memory TLS connection to ``proto`` (asyncio's
    ``SSLProtocol`` over a fake transport)."""

    def __init__(self, proto: Any, transport: _Transport, cafile: str) -> None:
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.set_alpn_protocols(["h2"])
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self._in, self._out, server_hostname="127.0.0.1")
        self._proto, self._transport = proto, transport

    def feed(self, data: bytes) -> None:
        """Hand the server ``data`` as its transport would (``SSLProtocol`` is buffered)."""
        view = memoryview(data)
        while view:
            buf = self._proto.get_buffer(len(view))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            self._proto.buffer_updated(n)
            view = view[n:]

    def handshake(self) -> None:
        for _ in range(10):
            try:
                self.obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            self.feed(self._out.read())
            for chunk in self._transport.chunks:
                self._in.write(chunk)
            self._transport.chunks.clear()
            if done:
                return
        raise SystemExit("tls: no handshake")

    def records(self, data: bytes) -> bytes:
        self.obj.write(data)
        return self._out.read()


async def h2_calls(n: int, tls: tuple[str, str, str] | None = None,
                   headers: str = "literal") -> float:
    conn = Connection(H2Server(lambda details: _HANDLER, 1 << 20))
    transport = _Transport()
    calls = _calls_bytes(n, headers)
    if tls is None:
        conn.connection_made(transport)  # type: ignore[arg-type]
        feed = conn.data_received
        chunks = calls
    else:
        cert, key, cafile = tls
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["h2"])
        loop = asyncio.get_running_loop()
        proto = asyncio.sslproto.SSLProtocol(loop, conn, ctx, loop.create_future(),
                                             server_side=True)
        transport.keep = True
        proto.connection_made(transport)  # type: ignore[arg-type]
        client = _TLSClient(proto, transport, cafile)
        client.handshake()
        for _ in range(3):  # the connection is made on the loop
            await asyncio.sleep(0)
        transport.keep = False
        feed = client.feed
        chunks = [client.records(PREFACE + frame(SETTINGS, 0, 0))]
        chunks += [client.records(data) for data in calls]
    if tls is None:
        feed(PREFACE + frame(SETTINGS, 0, 0))
    else:
        feed(chunks.pop(0))
    feed(chunks[0])
    for _ in range(3):
        await asyncio.sleep(0)
    written = transport.written
    t0 = time.process_time()
    for chunk in chunks[1:]:
        feed(chunk)
        for _ in range(3):  # the call's task runs, answers, and the output is flushed
            await asyncio.sleep(0)
    per_call = (time.process_time() - t0) / n
    if conn.streams or transport.written - written < n * 40:
        raise SystemExit("h2: not every call was answered")
    return per_call * 1e6


async def local_calls(n: int, tls: tuple[str, str, str] | None = None,
                      headers: str = "literal") -> float:
    channel = LocalTarget(lambda details: _HANDLER, 1 << 20).channel()
    call = channel.unary_unary("/s/M", request_serializer=bytes, response_deserializer=bytes)
    t0 = time.process_time()
    for _ in range(n):
        if await call(b"q", timeout=5.0) != b"answer":
            raise SystemExit("local: wrong answer")
    return (time.process_time() - t0) / n * 1e6


_BENCHES = {"h2": h2_calls, "local": local_calls}


def _tls_files(directory: Path) -> tuple[str, str, str]:
    """A throwaway CA and a certificate for 127.0.0.1 (tests/tls/certs.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.tls.certs import make_ca  # noqa: PLC0415 - only with --tls

    ca = make_ca(directory)
    pair = ca.issue(directory, "server")
    return str(pair.cert), str(pair.key), str(ca.cert)


def _round(tree: Path, name: str, args: argparse.Namespace,
           tls: tuple[str, str, str] | None) -> float:
    """One round in a fresh process running ``tree``'s runtime."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--round", name,
            "--calls", str(args.calls), "--headers", args.headers]
    if tls is not None:
        argv += ["--tls-files", *tls]
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONHASHSEED="0")
    out = subprocess.run(argv, cwd=tree, env=env, check=True, capture_output=True, text=True,
                         timeout=600)
    return float(out.stdout.split()[-1])


def _compare(args: argparse.Namespace, tls: tuple[str, str, str] | None) -> None:
    here = Path(__file__).resolve().parent.parent
    trees = {"this": here, "base": args.against.resolve()}
    label = f" {args.headers}{' tls' if tls is not None else ''}"
    for name in _BENCHES:
        if args.only not in (None, name):
            continue
        runs: dict[str, list[float]] = {"this": [], "base": []}
        for i in range(args.repeat):
            order = ("this", "base") if i % 2 == 0 else ("base", "this")
            for which in order:
                runs[which].append(_round(trees[which], name, args, tls))
        for which, figures in runs.items():
            listed = " ".join(f"{f:.2f}" for f in figures)
            sys.stdout.write(f"{name}{label} {which:4} best {min(figures):6.2f} median "
                             f"{statistics.median(figures):6.2f} µs per call  [{listed}]  "
                             f"({trees[which]})\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", choices=tuple(_BENCHES), default=None)
    ap.add_argument("--headers", choices=("literal", "indexed"), default="literal",
                    help="the request's header block (see the module's doc)")
    ap.add_argument("--tls", action="store_true", help="h2 over asyncio's TLS (in memory)")
    ap.add_argument("--against", type=Path, default=None,
                    help="another source tree, measured in alternate rounds")
    ap.add_argument("--round", choices=tuple(_BENCHES), help=argparse.SUPPRESS)
    ap.add_argument("--tls-files", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    tls: tuple[str, str, str] | None = tuple(args.tls_files) if args.tls_files else None
    if args.round is not None:  # one round of --against, in its own process
        figure = asyncio.run(_BENCHES[args.round](args.calls, tls, args.headers))
        sys.stdout.write(f"{figure:.4f}\n")
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.tls:
            tls = _tls_files(Path(tmp))
            if args.only is None:
                args.only = "h2"  # the in-process transport has no TLS
        if args.against is not None:
            _compare(args, tls)
            return
        for name, fn in _BENCHES.items():
            if args.only in (None, name):
                figures = [asyncio.run(fn(args.calls, tls, args.headers))
                           for _ in range(args.repeat)]
                sys.stdout.write(f"{name:5} {min(figures):6.2f} µs per call (best of "
                                 f"{args.repeat}; median {statistics.median(figures):.2f})\n")


if __name__ == "__main__":
    main()
