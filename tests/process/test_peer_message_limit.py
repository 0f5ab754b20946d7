"""One unfinished huge message on the peer port (issue 15 item 3): a raw HTTP/2 client
opens ``Peer/Send`` calls on a real member's peer port, declares a 1.5 GB message on each
and trickles its bytes. It used to be buffered (PEER_RECV_LIMIT was 2^31-1: the member
grew towards 1.5 GB); now each call is refused at its declared length, at once, the
member's RSS stays bounded and a normal client keeps getting answers."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from coord.pb import rpc_pb2, rpc_pb2_grpc
from coord.rpc.h2 import hpack
from coord.rpc.h2.server import DATA, END_HEADERS, END_STREAM, HEADERS, RST_STREAM, frame
from coord.server.transport import PEER_RECV_LIMIT
from tests.api.h2_attack import Attacker, Watch, request_headers, run_for
from tests.helpers.procs import Proc, free_port, process_group, start_coord

pytestmark = pytest.mark.timeout(120)

RSS_BOUND_MB = 250
"""As for the client-port attacks (tests/api/test_h2_attacks.py): idle is about 60 MB."""
DECLARED = 1_500_000_000
ATTACK_SECONDS = 4.0
SEND = b"/raftcronpb.Peer/Send"


@dataclass
class PeerAttacker(Attacker):
    """An :class:`Attacker` that also notes how the server ended each stream: the
    ``grpc-status`` / ``grpc-message`` of its trailers, or RST_STREAM."""

    ended: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    _decoder: hpack.Decoder = field(default_factory=hpack.Decoder)

    def _parse(self, chunk: bytes) -> None:
        buf = bytes(self._buf) + chunk
        pos = 0
        while len(buf) - pos >= 9:
            length = int.from_bytes(buf[pos:pos + 3], "big")
            if len(buf) - pos < 9 + length:
                break
            kind, flags = buf[pos + 3], buf[pos + 4]
            stream = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            payload = buf[pos + 9:pos + 9 + length]
            if kind == HEADERS:
                headers = dict(self._decoder.decode(payload))  # no padding/priority here
                if flags & END_STREAM:
                    self.ended[stream] = (headers.get(b"grpc-status", b""),
                                          headers.get(b"grpc-message", b""))
            elif kind == RST_STREAM:
                self.ended.setdefault(stream, (b"rst", payload))
            pos += 9 + length
        super()._parse(chunk)

    def connect(self) -> None:
        super().connect()
        self._decoder = hpack.Decoder()
        self.ended.clear()


@pytest.fixture
def member(tmp_path: Path) -> Iterator[tuple[Proc, int]]:
    with process_group(tmp_path) as group:
        pport = free_port()
        proc = start_coord(group, pport=pport)
        with grpc.insecure_channel(proc.endpoint) as ch:  # ready to answer
            rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"probe"), timeout=30,
                                          wait_for_ready=True)
        yield proc, pport


def test_a_huge_declared_peer_message_is_refused_at_once(member: tuple[Proc, int]) -> None:
    proc, pport = member
    a = PeerAttacker(pport)
    a.connect()
    block = request_headers(SEND)
    state = {"stream": 1, "opened": 0, "trickled": 0, "refused": 0}
    refusal_times: list[float] = []
    opened_at: dict[int, float] = {}

    def open_stream() -> bool:
        sid = state["stream"]
        opened_at[sid] = time.monotonic()
        state["opened"] += 1
        return a.send(frame(HEADERS, END_HEADERS, sid, block)
                      + frame(DATA, 0, sid, b"\x00" + struct.pack(">I", DECLARED)))

    def step() -> bool:
        sid = state["stream"]
        if sid in a.ended:
            refusal_times.append(time.monotonic() - opened_at[sid])
            state["refused"] += 1
            state["stream"] += 2
            return open_stream()
        # Trickle: 1 KiB every 10 ms into the declared message.
        if not a.send(frame(DATA, 0, sid, b"x" * 1024)):
            state["stream"] = 1
            return open_stream()
        state["trickled"] += 1024
        a.drain(wait=0.01)
        return True

    with Watch(proc.endpoint, proc.popen.pid) as watch:
        open_stream()
        run_for(ATTACK_SECONDS, step)
        a.close()
    print(f"peer 1.5 GB declared: {state['opened']} calls, {state['refused']} refused "
          f"(slowest after {max(refusal_times, default=0) * 1000:.0f} ms), "
          f"{state['trickled'] >> 10} KiB trickled, max RSS {watch.max_rss_kib >> 10} MB, "
          f"gets {watch.gets}, limit {PEER_RECV_LIMIT >> 20} MiB")
    assert proc.alive(), proc.log()[-3000:]
    assert state["refused"] >= 10, (state, a.ended)
    # Refused on the declared length, not after receiving it: at the trickle's 100 KiB/s
    # the limit would take minutes to reach; a few seconds leaves room for a loaded machine.
    assert max(refusal_times) < 3.0, max(refusal_times)
    status, message = a.ended[1] if 1 in a.ended else next(iter(a.ended.values()))
    assert status == b"8", (status, message)  # RESOURCE_EXHAUSTED
    assert f"({DECLARED} vs. {PEER_RECV_LIMIT})".encode() in message
    assert watch.gets >= 2 and not watch.failures, watch.failures[:5]
    assert watch.max_rss_kib < RSS_BOUND_MB << 10
