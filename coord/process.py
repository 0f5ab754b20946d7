"""Process-wide settings of a long-lived raftcron process (a member, an agent, a worker):
made once by the CLI, never by a library constructor, so that tests and embedders sharing
a process keep their own."""

from __future__ import annotations

import asyncio
import gc
import os


def setup_process() -> None:
    """What the CLI sets before it starts its event loop: :func:`use_uvloop`."""
    use_uvloop()


def use_uvloop() -> bool:
    """Make the next event loop created by ``asyncio.run`` (or ``new_event_loop``) a uvloop
    loop, unless ``RAFTCRON_UVLOOP=0``. Returns whether it did.

    A member's request path is asyncio futures, tasks, callbacks and socket I/O (its HTTP/2
    server, the Raft loop); uvloop runs them for less CPU (docs/benchmarks.md). Nothing in
    coord depends on which loop runs it.
    """
    if os.environ.get("RAFTCRON_UVLOOP", "1") == "0":
        return False
    try:
        import uvloop  # noqa: PLC0415 - optional at import time, a dependency in practice
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def gc_freeze_enabled() -> bool:
    """Whether long-lived processes (members, CLI workers) freeze their startup heap:
    unless ``RAFTCRON_GC_FREEZE=0``."""
    return os.environ.get("RAFTCRON_GC_FREEZE", "1") != "0"


def freeze_startup_heap() -> bool:
    """Collect once, then move every object alive now out of the collector's reach
    (``gc.freeze``), unless ``RAFTCRON_GC_FREEZE=0``. Returns whether it did.

    What a member holds after recovery and start — the imported modules (protobuf,
    structlog, ...), the recovered store, the Raft log — lives as long as the process, yet
    every full (generation 2) collection walked all of it again: a stop-the-world pause
    that every request in flight waits out (docs/benchmarks.md). Frozen objects are still
    freed by reference counting; only garbage cycles among them would be kept, and the
    collection before the freeze leaves none.
    """
    if not gc_freeze_enabled():
        return False
    gc.collect()
    gc.freeze()
    return True
