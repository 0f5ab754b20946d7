"""Sweep simulator seeds: ``python -m tests.sim.sweep A..B`` (inclusive; or one seed ``N``).

Prints every failing seed with its options and replay command, progress every few
seconds on stderr, and ends with ``N passed, N failed``; exits 1 on any failure. Seeds
run in parallel over ``--jobs`` processes (default: all CPUs). ``--bugs a,b`` injects core
(``Config.bugs``) or simulator bugs; ``--trace`` with a single seed prints the full report
with the per-transition trace (also on success).

``make sim SEEDS=1000..5999`` runs it with ``PYTHONHASHSEED=0``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator

from coord.raft import KNOWN_BUGS
from tests.sim.options import SIM_BUGS
from tests.sim.runner import run_seed


def parse_range(text: str) -> range:
    if ".." in text:
        a, b = text.split("..", 1)
        return range(int(a), int(b) + 1)
    return range(int(text), int(text) + 1)


def split_bugs(names: str) -> tuple[frozenset[str], frozenset[str]]:
    wanted = {n.strip() for n in names.split(",") if n.strip()}
    unknown = wanted - KNOWN_BUGS - SIM_BUGS
    if unknown:
        raise SystemExit(f"unknown bugs: {sorted(unknown)}; known: {sorted(KNOWN_BUGS | SIM_BUGS)}")
    return frozenset(wanted & KNOWN_BUGS), frozenset(wanted & SIM_BUGS)


_BUGS: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())


def _init(bugs: tuple[frozenset[str], frozenset[str]]) -> None:
    global _BUGS
    _BUGS = bugs


def _one(seed: int) -> tuple[int, bool, str, float]:
    res = run_seed(seed, bugs=_BUGS[0], sim_bugs=_BUGS[1])
    return seed, res.ok, res.summary() if not res.ok else "", res.elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.sim.sweep", description=__doc__)
    ap.add_argument("seeds", help="A..B (inclusive) or N")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--bugs", default=os.environ.get("SIM_BUGS", ""))
    ap.add_argument("--trace", action="store_true", help="single seed: print the full trace")
    args = ap.parse_args(argv)
    seeds = parse_range(args.seeds)
    bugs = split_bugs(args.bugs)
    out = sys.stdout
    if args.trace:
        for seed in seeds:
            res = run_seed(seed, bugs=bugs[0], sim_bugs=bugs[1], trace=True)
            print(res.report(trace_lines=0), file=out)
            print(f"{int(res.ok)} passed, {int(not res.ok)} failed", file=out)
            return 0 if res.ok else 1
    t0 = time.monotonic()
    passed = failed = 0
    failures: list[tuple[int, str]] = []
    last_progress = t0
    jobs = max(1, min(args.jobs, len(seeds)))
    results: Iterator[tuple[int, bool, str, float]]
    if jobs == 1:
        _init(bugs)
        results = map(_one, seeds)
        pool = None
    else:
        ctx = multiprocessing.get_context("fork")
        pool = ctx.Pool(jobs, initializer=_init, initargs=(bugs,))
        results = pool.imap_unordered(_one, seeds, chunksize=4)
    try:
        for seed, ok, summary, _elapsed in results:
            if ok:
                passed += 1
            else:
                failed += 1
                failures.append((seed, summary))
                print(summary, file=out, flush=True)
            now = time.monotonic()
            if now - last_progress >= 10:
                last_progress = now
                done = passed + failed
                rate = done / (now - t0)
                left = (len(seeds) - done) / rate if rate else 0.0
                print(
                    f"[{done}/{len(seeds)}] {failed} failed, {rate:.1f} seeds/s, ~{left:.0f}s left",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    wall = time.monotonic() - t0
    if failures:
        print(f"failing seeds: {' '.join(str(s) for s, _ in sorted(failures))}", file=out)
    print(f"swept {len(seeds)} seeds ({seeds.start}..{seeds.stop - 1}) in {wall:.1f}s", file=out)
    print(f"{passed} passed, {failed} failed", file=out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
