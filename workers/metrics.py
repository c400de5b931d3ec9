"""Project metrics (placeholder: no-ops until the ops work lands the real exporter).

Stages call these functions; they never raise.
"""

from __future__ import annotations


def api_call(endpoint: str, status: int | str, code: str = "") -> None:
    """One Evolink API call: endpoint create|query|file, HTTP status (or 'error'), code."""


def job_state(state: str) -> None:
    """A job entered ``state``."""


def job_failed(reason: str) -> None:
    """A job ended failed with ``reason`` (the job error code)."""


def polls_per_job(polls: int) -> None:
    """Observed once per job when it leaves generating."""


def enqueue_to_stored(seconds: float) -> None:
    """Observed once per stored job."""


def bytes_stored(n: int) -> None:
    """Bytes written to S3."""


def credits_reserved(credits: float) -> None:
    """Credits reserved by a create."""


def quota_breaker(open_: bool) -> None:
    """The quota breaker opened (True) or closed (False)."""


def limiter_wait(kind: str) -> None:
    """A stage had to wait for a token of the shared limiter (create|query|inflight)."""
