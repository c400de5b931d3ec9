"""Typed client for the Evolink image API (models, errors, HTTP client)."""

from nanobanana_queue.workers.evolink.models import (
    GenerationRequest,
    ModelParams,
    Quality,
    Size,
    Task,
    TaskStatus,
    ThinkingLevel,
)

__all__ = [
    "GenerationRequest",
    "ModelParams",
    "Quality",
    "Size",
    "Task",
    "TaskStatus",
    "ThinkingLevel",
]
