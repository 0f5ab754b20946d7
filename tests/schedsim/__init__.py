"""Deterministic scheduler simulator: production workers, simulated time, store and processes.

See :mod:`tests.schedsim.runner` for how one seed runs and ``FINDINGS.md`` for what ran.
"""
