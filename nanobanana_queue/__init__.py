"""nanobanana-queue: a durable job system for the Evolink "Nano Banana 2 Beta" image API.

The one import name the installed distribution adds. The producer API is importable from
here (``from nanobanana_queue import Producer``); the parts live below it:
``nanobanana_queue.producers`` (Python API, CLI, HTTP ingress), ``nanobanana_queue.workers``
(the Celery application: ``celery -A nanobanana_queue.workers.app worker``),
``nanobanana_queue.emulator`` and ``nanobanana_queue.devstack`` (``nbq emulator``,
``nbq dev``). In the repository those parts are the top-level ``workers/``, ``producers/``,
``emulator/`` and ``devstack/`` directories; ``nanobanana_queue/<part>`` links to them.

Importing this package loads nothing else: a worker process that imports
``nanobanana_queue.workers.app`` must not pull the producer side in, so the names below are
resolved on first use (PEP 562); type checkers read them from the ``TYPE_CHECKING`` block.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nanobanana_queue.producers import (
        AsyncJobHandle,
        AsyncProducer,
        CreditBudgetExceededError,
        EnqueueUncertainError,
        GenerationRequest,
        InvalidRequestError,
        JobActionRefusedError,
        JobHandle,
        JobIdConflictError,
        JobNotCancellableError,
        JobNotFoundError,
        JobNotStoredError,
        JobRecord,
        JobState,
        MayPayTwiceError,
        Producer,
        ProducerError,
        Quality,
        Size,
        StoredImage,
        ThinkingLevel,
        WaitTimeoutError,
        validate_request,
    )

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


def __getattr__(name: str) -> Any:
    """The producer API's names, imported from ``nanobanana_queue.producers`` when asked."""
    if name in __all__:
        return getattr(importlib.import_module("nanobanana_queue.producers"), name)
    raise AttributeError(f"module 'nanobanana_queue' has no attribute {name!r}")
