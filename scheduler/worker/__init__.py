"""The scheduler worker: watch jobs, fire on time, claim, run, record.

:class:`Worker` (in :mod:`scheduler.worker.wiring`) builds the parts — session, views,
firing, running, reaping, housekeeping — around one shared state; the decisions among them
are pure functions in :mod:`scheduler.worker.decide`.
"""

from scheduler.plan import MANUAL_SUFFIX
from scheduler.worker.config import WorkerConfig
from scheduler.worker.session import VERSION
from scheduler.worker.state import JobEntry, Running, StageStats
from scheduler.worker.wiring import Worker

__all__ = ["MANUAL_SUFFIX", "VERSION", "JobEntry", "Running", "StageStats", "Worker",
           "WorkerConfig"]
