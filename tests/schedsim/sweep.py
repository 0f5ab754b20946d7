"""Sweep scheduler-simulator seeds: ``python -m tests.schedsim.sweep A..B`` (inclusive; or
one seed ``N``).

Prints every failing seed with what its checkers found and the replay command, and ends
with ``N passed, N failed``; exits 1 on any failure. Seeds run in parallel over ``--jobs``
processes. ``--bugs a,b`` injects bugs (``tests.schedsim.bugs.BUGS``).
``make schedsim SEEDS=0..999`` runs it with ``PYTHONHASHSEED=0``; ``SCHED_SEED=n`` in the
pytest module replays one seed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time

from tests.schedsim.bugs import BUGS
from tests.schedsim.checks import check
from tests.schedsim.runner import run_seed


def parse_range(text: str) -> range:
    if ".." in text:
        a, b = text.split("..", 1)
        return range(int(a), int(b) + 1)
    return range(int(text), int(text) + 1)


def judge(seed: int, bugs: frozenset[str] = frozenset(), extras: bool = True) -> str:
    """'' if every checker passed, else what they found (one line per violation);
    ``extras=False`` runs the seed without slow paths and applies (``options.draw``)."""
    found = check(run_seed(seed, bugs, extras))
    return "\n".join(f"  {name}: {v}" for name, vs in found.items() for v in vs[:5])


_BUGS: frozenset[str] = frozenset()


def _init(bugs: frozenset[str]) -> None:
    global _BUGS
    _BUGS = bugs


def _one(seed: int) -> tuple[int, str]:
    return seed, judge(seed, _BUGS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.schedsim.sweep", description=__doc__)
    ap.add_argument("seeds", help="A..B (inclusive) or N")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--bugs", default="")
    args = ap.parse_args(argv)
    bugs = frozenset(b.strip() for b in args.bugs.split(",") if b.strip())
    if bugs - set(BUGS):
        raise SystemExit(f"unknown bugs: {sorted(bugs - set(BUGS))}; known: {list(BUGS)}")
    seeds = parse_range(args.seeds)
    passed = failed = 0
    t0 = time.monotonic()
    with multiprocessing.get_context("fork").Pool(max(args.jobs, 1), _init, (bugs,)) as pool:
        for seed, found in pool.imap_unordered(_one, seeds, chunksize=4):
            if found:
                failed += 1
                print(f"seed {seed} FAILED (replay: SCHED_SEED={seed} PYTHONHASHSEED=0 "
                      f"python -m pytest tests/schedsim/test_schedsim.py)\n{found}",
                      flush=True)
            else:
                passed += 1
    print(f"{passed} passed, {failed} failed ({time.monotonic() - t0:.1f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
