"""Seeds that fail for a reason written up in FINDINGS.md and not fixed yet: kept out of the
CI set (``test_schedsim``) so the suite stays green, and listed here so they are replayed
once fixed (``make schedsim SEEDS=n``; remove a seed when its finding is fixed)."""

KNOWN_FAILING: dict[int, str] = {}
"""seed → finding id (FINDINGS.md), for the CI range 0..299."""
