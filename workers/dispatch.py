"""The one dispatcher: a step becomes an ``nbq.*`` message, built and sent only here.

Stages, the task wrapper, the reconciler, the producer and the callback receiver all
hand their next step to :class:`Dispatcher`; nothing else calls ``send_task``. The
message shapes (task names, keyword arguments) are declared once, in
``workers/pipeline.py``, as are the guard's (``workers/guard/inspect.py``).

No message of ours waits longer than NBQ_MAX_COUNTDOWN_S (a Retry-After of hours
included): the consumer guard refuses ETAs beyond it, and waking early is harmless (the
breaker, limiter and poll schedule re-check and wait again).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from celery.exceptions import Reject
from celery.exceptions import Retry as CeleryRetry

from nanobanana_queue.workers.pipeline import BY_STEP
from nanobanana_queue.workers.settings import Settings
from nanobanana_queue.workers.stages.steps import Message, Retry

if TYPE_CHECKING:
    from celery import Celery, Task


@dataclass(frozen=True)
class Envelope:
    """A message as it goes on the wire: task name, keyword arguments, countdown."""

    task: str
    kwargs: dict[str, Any]
    after_s: float = 0.0


#: Each step class's field defaults (what an optional argument is left out at).
_DEFAULTS: dict[str, dict[str, Any]] = {}


def _defaults(step: Message) -> dict[str, Any]:
    name = type(step).__name__
    if name not in _DEFAULTS:
        _DEFAULTS[name] = {f.name: f.default for f in fields(step)}
    return _DEFAULTS[name]


def envelope(step: Message) -> Envelope:
    """The message for ``step`` (pure: what ``send`` publishes, uncapped).

    The task and its keyword arguments are the step class's entry in
    ``workers/pipeline.py``: each declared argument is the step's field of that name; one
    marked optional (``name?``) is left out while it holds the field's default.
    """
    stage = BY_STEP.get(type(step).__name__)
    if stage is None:
        raise TypeError(f"not a message step: {step!r}")
    defaults = _defaults(step)
    kwargs: dict[str, Any] = {}
    for name in stage.param_names:
        value = getattr(step, name)
        if name not in stage.optional_params or value != defaults[name]:
            kwargs[name] = value
    return Envelope(stage.task, kwargs, getattr(step, "after_s", 0.0))


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
        shows it as a retry with the error's own class; returns the ``Retry`` the task
        raises. A retry is always the running task's own message (``again`` only changes
        its arguments): stages never run each other (workers/pipeline.py), so no other
        stage's retry can reach here.

        The message's ``retries`` header counts the retries since the last wait that
        spends no budget: ``task.retry`` adds one to it; a wait with ``spends_budget``
        false (a quota pause, a key re-check) goes out with 0 (:func:`_wait_again`), so
        the job keeps its whole transient budget (``RetryRule.spends_budget``,
        workers/errors.py).
        """
        again = envelope(step.again) if step.again is not None else None
        if again is not None and again.task != task.name:
            raise ValueError(f"{task.name} cannot retry as {again.task}: {step.again!r}")
        kwargs = again.kwargs if again is not None else None
        countdown = min(step.after_s, self.max_countdown_s)
        if not step.spends_budget:
            return _wait_again(task, step.error, countdown, kwargs)
        return task.retry(  # type: ignore[no-any-return]
            exc=step.error, countdown=countdown, kwargs=kwargs, max_retries=None, throw=False
        )


def _wait_again(
    task: Task, error: Exception, countdown: float, kwargs: dict[str, Any] | None
) -> Exception:
    """``task.retry`` with ``retries`` 0 instead of one more: the same message
    (``signature_from_request``), published the same way, and the same ``Retry`` for the
    worker to raise (Flower: RETRY with ``error``'s class). In eager mode (tests),
    ``Task.apply`` runs the signature itself, as after ``task.retry``."""
    request = task.request
    if request.called_directly:
        raise error
    sig = task.signature_from_request(request, None, kwargs, countdown=countdown, retries=0)
    if not request.is_eager:
        try:
            sig.apply_async()
        except Exception as exc:  # what task.retry does when the re-send fails
            raise Reject(exc, requeue=False) from exc
    retry: Exception = CeleryRetry(exc=error, when=countdown, is_eager=request.is_eager, sig=sig)
    return retry
