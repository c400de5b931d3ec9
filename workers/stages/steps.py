"""Steps: what a stage asks for next, as plain values instead of side effects.

A stage does its own work (one API call, state-checked writes to the job record) and
then *returns* one step. It never sends a message or raises to be retried; whoever ran
it executes the step: the Celery task wrapper (``workers.tasks.base``) and, for every
step that is a message, the one dispatcher (``workers.dispatch``), which is the only
place an ``nbq.*`` message is built. Tests assert on the returned step.

Every step has a ``label``: the run's short outcome for logs, tests and the task result.

=============  =================================================================
step           executed as
=============  =================================================================
``Generate``   an ``nbq.generate`` message (a producer's new job)
``Submit``     an ``nbq.submit`` message, after ``after_s`` (a deferral or recreate)
``Poll``       an ``nbq.poll`` message carrying the chain's token, after ``after_s``
``Download``   an ``nbq.download`` message
``Adopt``      an ``nbq.adopt`` message (a callback's or a person's task id)
``Notify``     an ``nbq.notify`` message: one webhook delivery try (workers/notify/)
``Retry``      Celery ``self.retry`` of the running task (Flower shows the cause);
               when its budget is spent, the job fails with ``on_exhausted``
``Done``       nothing follows (the job moved on, ended, or another run owns it)
``Fail``       nothing follows: this run failed the job (``fail_job`` recorded why)
=============  =================================================================

"Later" has one form: a message step's ``after_s`` (or a Retry's), always clamped to
NBQ_MAX_COUNTDOWN_S by the dispatcher.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from nanobanana_queue.workers.jobs.record import JobError
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.policy.retry import RetryCause


@dataclass(frozen=True)
class Generate:
    """A new job's entry message; ``request`` is its validated API JSON (never re-checked)."""

    job_id: str
    request: dict[str, Any]
    producer: str | None = None
    batch_id: str | None = None
    priority: str = "normal"
    notify_url: str | None = None
    on_done: dict[str, str] | None = None
    #: Proof that the sender speaks for ``producer`` (``workers.producer_keys``).
    producer_proof: str | None = None
    label: str = "generate"


@dataclass(frozen=True)
class Submit:
    job_id: str
    after_s: float = 0.0
    label: str = "submit"


@dataclass(frozen=True)
class Poll:
    job_id: str
    token: str
    after_s: float = 0.0
    #: Carried so that a poll whose record vanished can rescue the paid task.
    evolink_task_id: str | None = None
    label: str = "poll"


@dataclass(frozen=True)
class Download:
    job_id: str
    evolink_task_id: str | None = None
    label: str = "download"


@dataclass(frozen=True)
class Adopt:
    job_id: str
    task_id: str
    source: Literal["callback", "person"] = "callback"
    label: str = "adopt"


@dataclass(frozen=True)
class Notify:
    """One webhook delivery try (``nbq.notify``): the same id and body on every try."""

    webhook_id: str
    job_id: str
    event: str
    url: str
    payload: dict[str, Any]
    first_at: float  # epoch s of the first try: retries stop NBQ_NOTIFY_RETRY_PERIOD_S after
    attempt: int = 0
    after_s: float = 0.0
    label: str = "notify"


#: The steps that are messages (the dispatcher's input).
Message = Generate | Submit | Poll | Download | Adopt | Notify
#: What sends a message step (``Dispatcher.send``; a list's ``append`` in tests).
Send = Callable[[Message], object]


@dataclass(frozen=True)
class Retry:
    """Run this same task again after ``after_s`` (built by ``workers.policy.retry``).

    ``budget`` None waits without bound (and does not spend the transient budget when
    ``spends_budget`` is false: quota waits keep jobs queued, never failed). Past the
    budget the job fails with ``on_exhausted`` from ``fail_from`` only (another stage
    that has since moved the job on is never failed from under it); with no
    ``on_exhausted`` the cause itself ends the task. ``again`` replaces the task's
    arguments (a poll retry carries its new token).
    """

    cause: RetryCause
    error: BaseException = field(compare=False)
    after_s: float
    budget: int | None
    spends_budget: bool = True
    on_exhausted: JobError | None = None
    fail_from: tuple[JobState, ...] | None = None
    again: Message | None = None
    label: str = "retry"


@dataclass(frozen=True)
class Done:
    label: str


@dataclass(frozen=True)
class Fail:
    """This run moved the job to ``failed`` (or found it failed by a racing run)."""

    label: str = "failed"


Step = Message | Retry | Done | Fail
