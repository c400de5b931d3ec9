"""The pipeline, declared: every ``nbq.*`` task, its queue, what it may send next, its time
limits and the retries it may ask for. Read this file to follow a job.

One job, one poll, one image::

    producer ──nbq.generate──► [submit queue] intake, then submit (one create, paid)
                                   │ Poll(after ≈ estimated_time)
                                   ▼
                               [poll queue] poll ──► Poll again later (still generating)
                                   │ Download (completed)        └─► Submit (recreate)
                                   ▼
                               [download queue] download ──► S3, manifest: stored

Everything that names a task is derived from :data:`PIPELINE` (a test keeps each one
equal to it, and ``docs/architecture.md``'s generated table too):

- the message contract (``workers/contract.py``: ``TASK_QUEUES``, the declared queues);
- routing (``workers/dispatch.py``: a step class becomes its task's message, with the
  declared keyword arguments; ``task_routes`` in ``workers/app.py``);
- the consumer guard (``workers/guard/inspect.py``: ``TASK_PARAMS``, the accepted tasks
  and their arguments in positional order);
- the Celery tasks (``workers/tasks/pipeline.py`` registers one per stage entry, its ack
  mode and signature from here) and their time limits (``workers/app.py``).

A new task is one entry here plus its stage function (and, if another stage sends it, its
step class in ``workers/stages/steps.py``).

Stages never run each other: a stage that needs another's work returns that stage's step
(a message), so each message runs one stage. The one exception is declared below
(``composes``) and says why.

This module imports nothing of the project, so anything may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

#: The time limits of the tasks that make a paid create come from NBQ_SUBMIT_TIME_LIMIT_S
#: (``workers/app.py``): it also tells the reconciler how long a submit claim may live.
SUBMIT_LIMITS: Final = "NBQ_SUBMIT_TIME_LIMIT_S"


@dataclass(frozen=True)
class Stage:
    """One ``nbq.*`` task: a message, the queue it waits on, and the stage it runs."""

    #: The task name: a promise to other services (docs/message-contract.md).
    task: str
    #: The queue it is routed to: a promise too.
    queue: str
    #: Keyword arguments in positional order. ``name?``: sent only when the step's value is
    #: not its default (older workers, smaller messages); the others always.
    params: tuple[str, ...]
    #: The guard's value check for these arguments (``workers/guard/inspect.py`` CHECKS).
    check: str
    #: ``module:function`` run by the generic stage task; None: a task module of its own.
    stage: str | None
    #: The step class (``workers/stages/steps.py``) that becomes this message.
    step: str | None
    #: The tasks whose messages this one's steps may be (its next hops).
    next: tuple[str, ...]
    #: (soft, hard) seconds, or :data:`SUBMIT_LIMITS`.
    limits: tuple[float, float] | str
    #: ``late``: acked after the run, redelivered if the worker dies (idempotent stages).
    #: ``early``: acked on receipt (the paid create relies on the job record instead).
    acks: Literal["early", "late"]
    #: The retry rules its Retry steps may follow (``workers/errors.py`` RETRY_RULES, by
    #: name); every stage task may also wait out a store outage, ``store_wait``
    #: (``workers/tasks/base.py``).
    retries: tuple[str, ...] = ()
    #: Other stages it runs inline in the same message, and why (an exception: see below).
    composes: tuple[str, ...] = ()
    #: Who else sends it (not a stage of this table).
    sent_by: tuple[str, ...] = ()
    #: One line for the docs.
    does: str = ""

    #: The argument names without their ``?`` marks, and those marked optional (derived).
    param_names: tuple[str, ...] = field(init=False)
    optional_params: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "param_names", tuple(p.rstrip("?") for p in self.params))
        optional = frozenset(p.rstrip("?") for p in self.params if p.endswith("?"))
        object.__setattr__(self, "optional_params", optional)

    @property
    def ack_options(self) -> dict[str, bool]:
        """Celery's task options for :attr:`acks`."""
        late = self.acks == "late"
        return {"acks_late": late, "reject_on_worker_lost": late}


GENERATE: Final = Stage(
    task="nbq.generate",
    queue="submit",
    params=(
        "request",
        "job_id",
        "producer",
        "batch_id?",
        "notify_url?",
        "on_done?",
        "priority?",
        "producer_proof?",
    ),
    check="generate",
    stage="nanobanana_queue.workers.stages.intake:generate",
    step="Generate",
    # intake then submit's own next steps
    next=("nbq.poll", "nbq.submit", "nbq.adopt"),
    limits=SUBMIT_LIMITS,
    acks="early",
    retries=("backoff", "breaker_wait", "key_recheck"),
    # Declared composition: every job enters here (Producer.enqueue sends it too), and a
    # separate nbq.submit hop would add a broker round trip and a queue wait to every
    # job's latency for nothing: intake only writes the record. Its retry is this same
    # message again (the job id pinned), so nothing crosses stages.
    composes=("nbq.submit",),
    sent_by=("producers", "other services", "the ingress"),
    does="records the job (validated once), then submits it in the same run",
)
SUBMIT: Final = Stage(
    task="nbq.submit",
    queue="submit",
    params=("job_id",),
    check="job",
    stage="nanobanana_queue.workers.stages.submit:submit",
    step="Submit",
    next=("nbq.poll", "nbq.submit", "nbq.adopt"),
    limits=SUBMIT_LIMITS,
    acks="early",
    retries=("backoff", "breaker_wait", "key_recheck"),
    sent_by=("the reconciler", "nbq retry"),
    does="one paid create (queued → submitting → generating), or a deferral",
)
POLL: Final = Stage(
    task="nbq.poll",
    queue="poll",
    params=("job_id", "token", "evolink_task_id?"),
    check="poll",
    stage="nanobanana_queue.workers.stages.poll:poll",
    step="Poll",
    next=("nbq.poll", "nbq.download", "nbq.submit"),
    limits=(45, 75),
    acks="late",
    retries=("backoff",),
    sent_by=("the callback receiver", "the reconciler"),
    does="one task query: poll again later, download, recreate or fail",
)
DOWNLOAD: Final = Stage(
    task="nbq.download",
    queue="download",
    params=("job_id", "evolink_task_id?"),
    check="job",
    stage="nanobanana_queue.workers.stages.download:download",
    step="Download",
    next=("nbq.poll",),  # a vanished record: rescued, then polled afresh (links died with it)
    limits=(600, 660),  # big files, slow links
    acks="late",
    retries=("backoff",),
    sent_by=("the reconciler",),
    does="streams each result into S3, then the manifest: stored",
)
ADOPT: Final = Stage(
    task="nbq.adopt",
    queue="poll",
    params=("job_id", "task_id", "source"),
    check="adopt",
    stage="nanobanana_queue.workers.stages.adopt:adopt_message",
    step="Adopt",
    next=("nbq.poll",),
    limits=(45, 75),  # one task fetch, like a poll
    acks="late",
    retries=("backoff",),
    sent_by=("the callback receiver", "the reconciler", "nbq adopt"),
    does="attaches a task a callback or a person named (checked), then polls it",
)
RECONCILE: Final = Stage(
    task="nbq.reconcile",
    queue="poll",
    params=(),
    check="none",
    stage=None,  # workers/tasks/reconcile.py: one pass of the loop every worker host runs
    step=None,
    next=("nbq.submit", "nbq.poll", "nbq.download", "nbq.adopt"),
    limits=(120, 180),
    acks="early",
    sent_by=("anyone (optional)",),
    does="one reconciler pass: re-drives idle jobs",
)
NOTIFY: Final = Stage(
    task="nbq.notify",
    queue="notify",  # its own queue: a slow receiver never holds a stage
    params=("webhook_id", "job_id", "event", "url", "payload", "first_at", "attempt"),
    check="notify",
    stage=None,  # workers/tasks/notify.py: one delivery try (no job state moves)
    step="Notify",
    next=("nbq.notify",),
    limits=(30, 45),  # one try: NBQ_NOTIFY_TIMEOUT_S, then a countdown, never a sleep
    acks="late",
    sent_by=("the end listener", "nbq notify replay"),
    does="one signed webhook delivery try",
)

#: The pipeline, in a job's order.
PIPELINE: Final = (GENERATE, SUBMIT, POLL, DOWNLOAD, ADOPT, RECONCILE, NOTIFY)
BY_TASK: Final = {stage.task: stage for stage in PIPELINE}
BY_STEP: Final = {stage.step: stage for stage in PIPELINE if stage.step is not None}


def _check() -> None:
    """Every next hop and composed stage is a declared task; names are unique."""
    if len(BY_TASK) != len(PIPELINE):
        raise ValueError("two pipeline entries share a task name")
    for stage in PIPELINE:
        unknown = set(stage.next + stage.composes) - set(BY_TASK)
        if unknown:
            raise ValueError(f"{stage.task}: unknown next tasks {sorted(unknown)}")


_check()


def _where(stage: str) -> str:
    """``pkg.workers.stages.poll:poll`` as a reader finds it: `workers/stages/poll.py` `poll`."""
    module, _, function = stage.partition(":")
    path = module.removeprefix("nanobanana_queue.").replace(".", "/") + ".py"
    return f"`{path}` `{function}`"


def markdown() -> str:
    """The pipeline as docs/architecture.md shows it (a test keeps the two equal)."""

    def names(values: tuple[str, ...]) -> str:
        return ", ".join(f"`{v}`" for v in values) or "—"

    lines = [
        "| task | queue | runs | next | time limit (soft/hard s) | acks | retries | does |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in PIPELINE:
        runs = _where(s.stage) if s.stage else "its own task"
        if s.composes:
            runs += " (composes " + names(s.composes) + ")"
        limits = s.limits if isinstance(s.limits, str) else f"{s.limits[0]:g}/{s.limits[1]:g}"
        lines.append(
            f"| `{s.task}` | `{s.queue}` | {runs} | {names(s.next)} | {limits} | {s.acks} "
            f"| {names(s.retries)} | {s.does} |"
        )
    return "\n".join(lines)
