"""Job records in Redis: the state machine that drives the pipeline and its recovery."""

from nanobanana_queue.workers.jobs.record import JobError, JobRecord, StoredObject
from nanobanana_queue.workers.jobs.state import ACTIVE_STATES, TERMINAL_STATES, JobState
from nanobanana_queue.workers.jobs.store import JobStore

__all__ = [
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "JobError",
    "JobRecord",
    "JobState",
    "JobStore",
    "StoredObject",
]
