"""Producers: the Python API, CLI and HTTP ingress that enqueue generation jobs."""

from producers.api import JobHandle, Producer, StoredImage, validate_request
from producers.async_producer import AsyncJobHandle, AsyncProducer
from producers.errors import (
    CreditBudgetExceededError,
    EnqueueUncertainError,
    InvalidRequestError,
    JobActionRefusedError,
    JobIdConflictError,
    JobNotCancellableError,
    JobNotFoundError,
    JobNotStoredError,
    MayPayTwiceError,
    ProducerError,
    WaitTimeoutError,
)
from workers.evolink.models import GenerationRequest, Quality, Size, ThinkingLevel
from workers.jobs.record import JobRecord
from workers.jobs.state import JobState

__all__ = [
    "AsyncJobHandle",
    "AsyncProducer",
    "CreditBudgetExceededError",
    "EnqueueUncertainError",
    "GenerationRequest",
    "InvalidRequestError",
    "JobActionRefusedError",
    "JobHandle",
    "JobIdConflictError",
    "JobNotCancellableError",
    "JobNotFoundError",
    "JobNotStoredError",
    "JobRecord",
    "JobState",
    "MayPayTwiceError",
    "Producer",
    "ProducerError",
    "Quality",
    "Size",
    "StoredImage",
    "ThinkingLevel",
    "WaitTimeoutError",
    "validate_request",
]
