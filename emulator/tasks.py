"""Tasks in memory: the record, its status at any instant, and its API view.

Status is never stored: it is computed from the clock on every read, so no timer runs
per task and thousands of tasks cost nothing while they wait.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from typing import Any

from nanobanana_queue.emulator.constants import MODEL_NAME
from nanobanana_queue.emulator.links import LinkSigner
from nanobanana_queue.emulator.timing import phase_at

_ID_ALPHABET = string.ascii_lowercase + string.digits
#: The exact (time-scaled, possibly fractional) estimate; ``task_info.estimated_time``
#: carries it rounded up to whole seconds, as the spec's ``integer`` demands.
ESTIMATE_HEADER = "X-Emulator-Estimated-Time"
FINAL_STATUSES = frozenset({"completed", "failed"})


@dataclass
class CallbackAttempt:
    """One POST to a task's ``callback_url``."""

    attempt: int
    at: float
    status_code: int | None = None
    error: str | None = None
    delivered: bool = False


@dataclass
class TaskRecord:
    """Everything the emulator knows about one task; times are unix floats."""

    id: str
    created: int
    created_at: float
    started_at: float
    finishes_at: float
    duration_s: float
    duration_nominal_s: float
    estimated_time: int  # whole seconds on the wire (the spec's ``integer``), rounded up
    prompt: str
    size: str
    quality: str
    thinking_level: str
    credits_reserved: float
    expires_at: float
    idempotency_key: str | None = None
    callback_url: str | None = None
    fail_code: str | None = None
    fail_message: str | None = None
    links_expired: bool = False
    queries: int = 0
    downloads: int = 0
    callback_state: str | None = None
    callback_attempts: list[CallbackAttempt] = field(default_factory=list)
    result_urls: list[str] | None = None
    #: The exact scaled estimate, sent only in the emulator's own header (see ``headers``).
    estimated_time_exact: float | None = None

    def headers(self) -> dict[str, str]:
        """Emulator-own response headers; the vendor API sends none of these."""
        if self.estimated_time_exact is None:
            return {}
        return {ESTIMATE_HEADER: f"{self.estimated_time_exact:g}"}

    def status_at(self, now: float) -> tuple[str, int]:
        """``(status, progress)`` at ``now``."""
        phase, progress = phase_at(now, self.started_at, self.finishes_at)
        if phase != "done":
            return phase, progress
        return ("failed" if self.fail_code else "completed"), 100

    def links_valid_at(self, now: float) -> bool:
        return not self.links_expired and now < self.expires_at


@dataclass
class TaskStore:
    """All tasks by id, plus the idempotency index ``(api key, key) -> task id``."""

    signer: LinkSigner
    rng: random.Random
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    by_idempotency: dict[tuple[str, str], str] = field(default_factory=dict)

    def new_id(self, created: int) -> str:
        while True:
            suffix = "".join(self.rng.choices(_ID_ALPHABET, k=8))
            task_id = f"task-unified-{created}-{suffix}"
            if task_id not in self.tasks:
                return task_id

    def add(self, task: TaskRecord, api_key: str) -> None:
        self.tasks[task.id] = task
        if task.idempotency_key is not None:
            self.by_idempotency[(api_key, task.idempotency_key)] = task.id

    def get(self, task_id: str) -> TaskRecord | None:
        return self.tasks.get(task_id)

    def find_idempotent(self, api_key: str, key: str) -> TaskRecord | None:
        task_id = self.by_idempotency.get((api_key, key))
        return None if task_id is None else self.tasks.get(task_id)

    def clear(self) -> None:
        self.tasks.clear()
        self.by_idempotency.clear()

    def view(self, task: TaskRecord, now: float) -> dict[str, Any]:
        """The task object exactly as create, query and callbacks return it."""
        status, progress = task.status_at(now)
        body: dict[str, Any] = {
            "created": task.created,
            "id": task.id,
            "model": MODEL_NAME,
            "object": "image.generation.task",
            "progress": progress,
            "status": status,
            "task_info": {
                "can_cancel": status not in FINAL_STATUSES,
                "estimated_time": task.estimated_time,
            },
            "type": "image",
            "usage": {
                "billing_rule": "per_call",
                "credits_reserved": task.credits_reserved,
                "user_group": "default",
            },
        }
        if status == "completed":
            urls = self.results(task)
            body["results"] = urls
            body["result_data"] = [{"image_url": url} for url in urls]
        elif status == "failed":
            body["error"] = {
                "code": task.fail_code,
                "message": task.fail_message or "Image generation failed",
            }
        return body

    def results(self, task: TaskRecord) -> list[str]:
        """The signed result links (built once per task)."""
        if task.result_urls is None:
            task.result_urls = [self.signer.url(task.id, 0, task.expires_at)]
        return task.result_urls
