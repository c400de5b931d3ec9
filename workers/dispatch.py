"""The one dispatcher: a step becomes an ``nbq.*`` message, built and sent only here.

Stages, the task wrapper, the reconciler, the producer and the callback receiver all
hand their next step to :class:`Dispatcher`; nothing else calls ``send_task``. The
message shapes (task names, keyword arguments) are the contract of
``docs/message-contract.md`` and ``workers/guard/inspect.py`` (``TASK_PARAMS``).

No message of ours waits longer than NBQ_MAX_COUNTDOWN_S (a Retry-After of hours
included): the consumer guard refuses ETAs beyond it, and waking early is harmless (the
breaker, limiter and poll schedule re-check and wait again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nanobanana_queue.workers.contract import (
    TASK_ADOPT,
    TASK_DOWNLOAD,
    TASK_GENERATE,
    TASK_NOTIFY,
    TASK_POLL,
    TASK_SUBMIT,
)
from nanobanana_queue.workers.settings import Settings
from nanobanana_queue.workers.stages.steps import (
    Adopt,
    Download,
    Generate,
    Message,
    Notify,
    Poll,
    Retry,
    Submit,
)

if TYPE_CHECKING:
    from celery import Celery, Task


@dataclass(frozen=True)
class Envelope:
    """A message as it goes on the wire: task name, keyword arguments, countdown."""

    task: str
    kwargs: dict[str, Any]
    after_s: float = 0.0


def _generate_kwargs(step: Generate) -> dict[str, Any]:
    """``nbq.generate``'s kwargs: the optional ones only when set (older workers)."""
    kwargs: dict[str, Any] = {
        "request": step.request,
        "job_id": step.job_id,
        "producer": step.producer,
    }
    optional = {
        "batch_id": step.batch_id,
        "notify_url": step.notify_url,
        "on_done": step.on_done,
        "producer_proof": step.producer_proof,
    }
    kwargs.update({name: value for name, value in optional.items() if value is not None})
    if step.priority != "normal":
        kwargs["priority"] = step.priority  # absent = normal
    return kwargs


def envelope(step: Message) -> Envelope:
    """The message for ``step`` (pure: what ``send`` publishes, uncapped)."""
    if isinstance(step, Generate):
        return Envelope(TASK_GENERATE, _generate_kwargs(step))
    if isinstance(step, Submit):
        return Envelope(TASK_SUBMIT, {"job_id": step.job_id}, step.after_s)
    if isinstance(step, Poll):
        kwargs: dict[str, Any] = {"job_id": step.job_id, "token": step.token}
        if step.evolink_task_id:
            kwargs["evolink_task_id"] = step.evolink_task_id  # lets a vanished job be rescued
        return Envelope(TASK_POLL, kwargs, step.after_s)
    if isinstance(step, Download):
        kwargs = {"job_id": step.job_id}
        if step.evolink_task_id:
            kwargs["evolink_task_id"] = step.evolink_task_id
        return Envelope(TASK_DOWNLOAD, kwargs)
    if isinstance(step, Adopt):
        return Envelope(
            TASK_ADOPT, {"job_id": step.job_id, "task_id": step.task_id, "source": step.source}
        )
    if isinstance(step, Notify):
        kwargs = {
            "webhook_id": step.webhook_id,
            "job_id": step.job_id,
            "event": step.event,
            "url": step.url,
            "payload": step.payload,
            "first_at": step.first_at,
            "attempt": step.attempt,
        }
        return Envelope(TASK_NOTIFY, kwargs, step.after_s)
    raise TypeError(f"not a message step: {step!r}")


def capped_countdown(countdown_s: float | None, max_countdown_s: float) -> float | None:
    """``countdown_s`` clamped to NBQ_MAX_COUNTDOWN_S; None (send now) for none."""
    if not countdown_s:
        return None
    return min(countdown_s, max_countdown_s)


@dataclass(frozen=True)
class Dispatcher:
    """Sends steps through one Celery app, with one countdown cap."""

    app: Celery
    max_countdown_s: float

    @classmethod
    def for_settings(cls, app: Celery, settings: Settings) -> Dispatcher:
        return cls(app, settings.max_countdown_s)

    def send(self, step: Message, *, after_s: float | None = None, **options: Any) -> None:
        """Publish ``step``'s message (``after_s`` overrides its own; ``options`` go to
        ``send_task``, e.g. a kombu producer)."""
        message = envelope(step)
        self.app.send_task(
            message.task,
            kwargs=message.kwargs,
            countdown=capped_countdown(
                message.after_s if after_s is None else after_s, self.max_countdown_s
            ),
            **options,
        )

    def retry(self, task: Task, step: Retry) -> Exception:
        """Re-send the running ``task`` after ``step.after_s`` as a Celery retry, so Flower
        shows it as a retry with the cause's own exception class."""
        kwargs = envelope(step.again).kwargs if step.again is not None else None
        return task.retry(  # type: ignore[no-any-return]
            exc=step.error,
            countdown=min(step.after_s, self.max_countdown_s),
            kwargs=kwargs,
            max_retries=None,
        )
