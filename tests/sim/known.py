"""Seeds that fail because of open findings (see FINDINGS.md), by finding id.

The sweep in ``test_sim.py`` marks these seeds ``xfail`` (non-strict: a change anywhere in
the core can move a seed off the bug's path) so the suite stays usable while a core bug
is open; ``test_regressions.py`` keeps each finding's seeds and a directed reproduction.
Remove a seed once its finding is fixed.
"""

from __future__ import annotations

#: seed -> finding id (only findings that are still open)
OPEN: dict[int, str] = {}
