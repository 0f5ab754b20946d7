"""Scenario names of ``aetcd_driver.py``, importable without importing aetcd (whose
protos must not be loaded into the test process)."""

SCENARIOS = [
    "put_get",
    "read_your_writes",
    "concurrency",
    "prefix_range",
    "range_filters",
    "delete",
    "txn",
    "raw_txn",
    "lease",
    "keepalive",
    "watch",
    "watch_future",
    "watch_compacted",
    "raw_watch",
    "watch_catchup_batches",
    "watch_fragment",
    "lock",
    "status_members",
    "maintenance",
    "lease_grants",
    "errors",
]
