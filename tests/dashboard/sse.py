"""A server-sent-events reader for the tests: reads a stream on a thread, parses each
message (``event:`` and one ``data:`` line of JSON) and notes when it arrived."""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Message:
    event: str
    data: Any
    at: float
    """time.time() when it was read."""


class EventStream:
    """``GET url`` as an event stream; :meth:`next` waits for the next message."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self.conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                          headers={"Accept": "text/event-stream"})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = dict(self.response.getheaders())
        self.messages: queue.Queue[Message | None] = queue.Queue()
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        event, data = "message", ""
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data:
                        self.messages.put(Message(event, json.loads(data), time.time()))
                    event, data = "message", ""
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
        except (OSError, ValueError, AttributeError):
            pass  # closed under the reader (close()), or cut off
        finally:
            self.ended.set()
            self.messages.put(None)

    def next(self, timeout: float) -> Message | None:
        """The next message, or None when the stream ended or ``timeout`` passed."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def wait_for(self, event: str, timeout: float, **match: Any) -> Message:
        """The next ``event`` message whose data has ``match``'s items (others skipped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.next(left)
            if msg is None and self.ended.is_set():
                raise AssertionError(f"the stream ended before a {event!r} event")
            if msg is not None and msg.event == event and all(
                    msg.data.get(k) == v for k, v in match.items()):
                return msg
        raise TimeoutError(f"no {event!r} event with {match} within {timeout}s")

    def during(self, seconds: float) -> list[Message]:
        """Every message read within the next ``seconds`` (an observation interval)."""
        out: list[Message] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            msg = self.next(left)
            if msg is not None:
                out.append(msg)
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.response.close()
        with contextlib.suppress(OSError):
            self.conn.close()
