"""coord's lessor: leases, TTLs and attached keys; pure, time passed in."""

from coord.lease.lessor import Lease, Lessor

__all__ = ["Lease", "Lessor"]
