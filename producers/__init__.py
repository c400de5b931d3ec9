"""Producers: the Python API, CLI and HTTP ingress that enqueue generation jobs."""

from nanobanana_queue.producers.api import JobHandle, Producer, StoredImage, validate_request
from nanobanana_queue.producers.async_producer import AsyncJobHandle, AsyncProducer
from nanobanana_queue.producers.errors import (
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
from nanobanana_queue.workers.evolink.models import GenerationRequest, Quality, Size, ThinkingLevel
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState

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
