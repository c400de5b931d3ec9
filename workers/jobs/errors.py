"""Errors about a job that reach a producer's caller unchanged, defined once.

The job store, cancel and the manual actions (``workers/stages/manual.py``) raise them and the
producer API (``producers.errors`` re-exports them) lets them through, so a caller catches
one class whichever layer noticed. They live here, not in ``producers``, because
``workers`` never imports ``producers``.
"""

from __future__ import annotations


class ProducerError(Exception):
    """Base of everything the producer API raises."""


class JobNotFoundError(ProducerError, KeyError):
    """No record for this job id (never created, or past retention)."""

    def __str__(self) -> str:
        return f"job {self.args[0]!r} not found"


class JobNotCancellableError(ProducerError):
    """The job already ended (stored or failed): there is nothing to cancel."""


class JobActionRefusedError(ProducerError):
    """``retry`` or ``adopt`` does not apply to the job as it is; nothing was changed."""


class MayPayTwiceError(JobActionRefusedError):
    """``retry`` may pay for nothing: the job's create may already have been paid, or it
    failed for a permanent reason; it needs explicit consent (the message says which)."""
