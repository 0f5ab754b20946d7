"""Limits a job must fit, checked when the file is validated rather than at run time.

* exec: Linux refuses ``execve`` with E2BIG when one argument or environment string is longer
  than ``MAX_ARG_STRLEN`` (32 pages = 128 KiB, NUL included), or when argv + envp together
  (strings, NULs and one pointer each) exceed ``ARG_MAX`` (``sysconf(_SC_ARG_MAX)``, a quarter
  of the stack limit, 2 MiB by default). A string command is one argument of ``/bin/sh -c``.
* store: etcd refuses a request larger than ``--max-request-bytes`` (default 1.5 MiB, the same
  figure as ``coord.limits.MAX_REQUEST_BYTES``) and a txn with more than ``--max-txn-ops`` (default
  128) operations in any branch. A job is stored as one put of its canonical JSON.
"""

from __future__ import annotations

import functools
import os
from typing import Final

from coord.limits import MAX_REQUEST_BYTES

MAX_ARG_STRLEN: Final = 32 * 4096
"""Linux's per-string limit for argv and envp entries, NUL included."""


MAX_TXN_OPS: Final = 128
"""etcd's ``--max-txn-ops`` default."""

REQUEST_OVERHEAD: Final = 4096
"""Room kept in a request for its framing, the key and the compares."""

MAX_JOB_BYTES: Final = MAX_REQUEST_BYTES - REQUEST_OVERHEAD
"""The largest job JSON that still fits one put request."""


@functools.cache
def arg_max() -> int:
    """``ARG_MAX`` of this host (2 MiB when unknown)."""
    try:
        value = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        value = -1
    return value if value > 0 else 2 * 1024 * 1024


def _env_bytes(env: dict[str, str]) -> int:
    """What ``env`` takes of ARG_MAX: each ``K=V`` string, its NUL and its pointer."""
    return sum(len(f"{k}={v}".encode()) + 1 + 8 for k, v in env.items())


@functools.cache
def _own_env() -> tuple[dict[str, str], int]:
    """This process's environment (what a worker's jobs inherit) and its size, taken once:
    a file of 20,000 jobs is checked against it 20,000 times."""
    env = dict(os.environ)
    return env, _env_bytes(env)


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def exec_problems(argv: list[str], env: dict[str, str],
                  base_env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(field, message) for each way ``argv`` with ``env`` (over ``base_env``, the worker's
    own environment, by default this process's) would fail ``execve`` with E2BIG."""
    out: list[tuple[str, str]] = []
    for i, arg in enumerate(argv):
        size = len(arg.encode()) + 1
        if size > MAX_ARG_STRLEN:
            which = "the shell command" if argv[:2] == ["/bin/sh", "-c"] and i == 2 \
                else f"argument {i}"
            out.append(("command", f"{which} is {_kib(size)}; Linux does not exec an "
                        f"argument over {_kib(MAX_ARG_STRLEN)} (MAX_ARG_STRLEN) — put it in a "
                        "script file and run that"))
    for k, v in env.items():
        size = len(f"{k}={v}".encode()) + 1
        if size > MAX_ARG_STRLEN:
            out.append(("env", f"variable {k} is {_kib(size)}; Linux does not exec an "
                        f"environment string over {_kib(MAX_ARG_STRLEN)} (MAX_ARG_STRLEN)"))
    base, base_bytes = _own_env() if base_env is None else (base_env, _env_bytes(base_env))
    # The job's env replaces the base's variables of the same name.
    total = (sum(len(a.encode()) + 1 + 8 for a in argv) + base_bytes + _env_bytes(env)
             - _env_bytes({k: base[k] for k in env if k in base}))
    limit = arg_max()
    if total > limit:
        out.append(("command", f"command and environment together are {_kib(total)}; this "
                    f"host does not exec more than {_kib(limit)} (ARG_MAX)"))
    return out


def store_problems(job_json: str) -> list[tuple[str, str]]:
    """(field, message) if the job's stored form does not fit one store request."""
    size = len(job_json.encode())
    if size > MAX_JOB_BYTES:
        return [("", f"the job is {_kib(size)} when stored; etcd and coord refuse a request "
                 f"over {_kib(MAX_REQUEST_BYTES)} (--max-request-bytes), so a job may be at "
                 f"most {_kib(MAX_JOB_BYTES)}")]
    return []


def split_batches(sizes: list[int], max_ops: int = 100,
                  max_bytes: int = MAX_REQUEST_BYTES - 64 * 1024) -> list[range]:
    """Split operations of the given byte sizes into consecutive batches that each fit one
    txn: at most ``max_ops`` operations (below etcd's 128) and ``max_bytes`` bytes."""
    batches: list[range] = []
    start, used = 0, 0
    for i, size in enumerate(sizes):
        cost = size + 256  # key, compare and framing
        if i > start and (i - start >= max_ops or used + cost > max_bytes):
            batches.append(range(start, i))
            start, used = i, 0
        used += cost
    if start < len(sizes):
        batches.append(range(start, len(sizes)))
    return batches
