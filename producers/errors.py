"""Errors raised to producers.

::

    ProducerError
    ├── InvalidRequestError     the request breaks a rule; ``field`` names it; nothing enqueued
    ├── CreditBudgetExceededError  the daily credit budget would be exceeded; nothing enqueued
    ├── JobNotFoundError        no such job (or past retention)
    ├── JobNotCancellableError  the job already ended
    ├── JobNotStoredError       results asked for a job that is not stored (yet)
    └── WaitTimeoutError        ``wait`` gave up; the job goes on
"""

from __future__ import annotations


class ProducerError(Exception):
    """Base of everything the producer API raises."""


class InvalidRequestError(ProducerError, ValueError):
    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class CreditBudgetExceededError(ProducerError):
    pass


class JobNotFoundError(ProducerError, KeyError):
    def __str__(self) -> str:
        return f"job {self.args[0]!r} not found"


class JobNotCancellableError(ProducerError):
    pass


class JobNotStoredError(ProducerError):
    pass


class WaitTimeoutError(ProducerError, TimeoutError):
    pass
