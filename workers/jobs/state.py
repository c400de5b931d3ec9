"""The job state machine, shared by producers, workers, CLI and metrics.

::

    queued ──► submitting ──► generating ──► downloading ──► stored
       │            │              │               │
       └────────────┴──────────────┴───────────────┴──► failed | cancelled

``submitting → queued`` also happens: a submit that must wait (quota breaker open, rate
limit, retryable error before any API task exists) hands the job back to the queue.
``generating → queued`` happens when a retryable task error asks for a fresh API task
(a recreate: the job goes back to the queue and is claimed like a new one).

``outcome_unknown``: a create may have made (and charged) a task, but no answer said so.
With callbacks configured the job waits there for its task's callback (adopted →
``generating``) until a deadline (→ ``failed``, reason ``outcome_unknown``). A person may
move such a job, or a failed one, on by hand: ``nbq adopt`` (→ ``generating``) or
``nbq retry`` (→ ``queued``); those are the only ways out of ``failed``.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"  # set by the producer; waiting for a submit worker (or a quota pause)
    SUBMITTING = "submitting"  # set by the one submit worker that won the job
    GENERATING = "generating"  # set by submit once the API task exists; poll owns the job
    OUTCOME_UNKNOWN = "outcome_unknown"  # set by submit: a create may have been charged;
    #                                      waits for its task's callback (adopt) or deadline
    DOWNLOADING = "downloading"  # set by poll (or a callback) once results exist
    STORED = "stored"  # set by download once every image and the manifest are in S3
    FAILED = "failed"  # set by any stage, with an error {code, message, retryable}
    CANCELLED = "cancelled"  # set by a cancel request before the job was stored

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.STORED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_STATES = tuple(s for s in JobState if s not in TERMINAL_STATES)

#: Allowed transitions: state → states it may move to. Every move is a named transition
#: in ``workers/jobs/lifecycle.py`` (checked against this table at import), and the update
#: script refuses a move outside it (the table is compiled into the script).
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset(
        {JobState.SUBMITTING, JobState.OUTCOME_UNKNOWN, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.SUBMITTING: frozenset(
        {
            JobState.QUEUED,
            JobState.GENERATING,
            JobState.OUTCOME_UNKNOWN,
            JobState.FAILED,
            JobState.CANCELLED,
        }
    ),
    JobState.OUTCOME_UNKNOWN: frozenset(
        {JobState.GENERATING, JobState.QUEUED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.GENERATING: frozenset(
        # queued: a recreate (a retryable task error asks for a fresh API task).
        {JobState.QUEUED, JobState.DOWNLOADING, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.DOWNLOADING: frozenset({JobState.STORED, JobState.FAILED, JobState.CANCELLED}),
    JobState.STORED: frozenset(),
    # Only by a person (``nbq retry`` / ``nbq adopt``), never by a stage.
    JobState.FAILED: frozenset({JobState.QUEUED, JobState.GENERATING}),
    JobState.CANCELLED: frozenset(),
}


def sources_of(target: JobState) -> frozenset[JobState]:
    """Every state from which ``target`` may be reached."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)
