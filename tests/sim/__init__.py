"""Deterministic simulation of the Raft core (``coord.raft``) with a replicated KV store.

Modules: ``eventloop`` (virtual clock, event heap, per-component RNGs, trace), ``network``
(loss, duplication, delay/reordering, partitions), ``disk`` (durable vs unsynced writes,
crash, restore), ``kv`` (the revisioned applier), ``cluster`` (nodes and the Ready driver
with crash points), ``invariants`` (Raft safety + durability, checked at every state
change), ``workload`` (clients and their history), ``nemesis`` (crashes, partitions,
leader churn, transfers, membership changes, the server's early campaign and its false
alarms), ``options`` (swarm options per seed),
``runner`` (safety phase, liveness phase, history check), ``sweep`` (CLI).

Run: ``pytest tests/sim`` (CI seeds 0..299, checker tests, bug-injection tests);
``SIM_SEED=n pytest -s tests/sim/test_sim.py`` replays one seed with its trace;
``make sim SEEDS=1000..5999`` sweeps in parallel. Findings: ``FINDINGS.md``.
"""
