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
``Retry``      Celery ``self.retry`` of the running task (Flower shows the error's class);
               when its budget is spent, the job fails with ``exhausted``
``Done``       nothing follows (the job moved on, ended, or another run owns it)
``Fail``       nothing follows: this run failed the job; the task raises ``error``
=============  =================================================================

"Later" has one form: a message step's ``after_s`` (or a Retry's), always clamped to
NBQ_MAX_COUNTDOWN_S by the dispatcher.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from nanobanana_queue.workers.errors import NbqError, RetryRule
from nanobanana_queue.workers.jobs.state import JobState

if TYPE_CHECKING:
    from nanobanana_queue.workers.runtime import Runtime


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
    """Run this same task again after ``after_s`` because of ``error`` (built by
    :meth:`of` from the error class's ``retry_rule``).

    ``budget`` None waits without bound (and does not spend the transient budget when
    ``spends_budget`` is false: quota waits keep jobs queued, never failed). Past the
    budget the job fails with ``exhausted`` from ``fail_from`` only (another stage that
    has since moved the job on is never failed from under it); with no ``exhausted`` the
    task ends with ``error`` itself and no job fails. ``again`` replaces the task's
    arguments (a poll retry carries its new token).
    """

    error: NbqError = field(compare=False)
    after_s: float
    budget: int | None
    spends_budget: bool = True
    exhausted: NbqError | None = field(default=None, compare=False)
    fail_from: tuple[JobState, ...] | None = None
    again: Message | None = None
    label: str = "retry"

    @classmethod
    def of(
        cls,
        rt: Runtime,
        error: NbqError,
        *,
        attempt: int,
        rule: RetryRule | None = None,
        wait_s: float | None = None,
        fail_from: tuple[JobState, ...] | None = None,
        exhausted: NbqError | None = None,
        again: Message | None = None,
    ) -> Retry:
        """The step for ``error``: delay and budget from its class's ``retry_rule``
        (``rule`` overrides it: a query retries any API trouble with backoff), honouring
        a server's Retry-After (``wait_s``, e.g. the breaker's wait, overrides it); past
        the budget the job fails with ``exhausted`` from ``fail_from``."""
        rule = rule or error.retry_rule
        if rule is None:
            raise ValueError(f"{type(error).__name__} is not retried: fail the job instead")
        return cls(
            error=error,
            after_s=rule.delay_s(
                attempt=attempt,
                backoff=rt.backoff,
                rng=rt.rng,
                wait_s=error.retry_after_s if wait_s is None else wait_s,
            ),
            budget=rule.budget(transient_retries=rt.settings.max_transient_retries),
            spends_budget=rule.spends_budget,
            exhausted=exhausted,
            fail_from=fail_from,
            again=again,
        )


@dataclass(frozen=True)
class Done:
    label: str


@dataclass(frozen=True)
class Fail:
    """This run moved the job to ``failed`` with ``error`` (the task raises it, so
    Flower lists the run under the reason's class). A run that finds the job failed by
    another returns ``Done``: only one run per failure raises."""

    error: NbqError = field(compare=False)
    label: str = "failed"


Step = Message | Retry | Done | Fail
