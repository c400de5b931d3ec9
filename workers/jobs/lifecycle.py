"""A job's life as named values: every write to an existing record is one of these.

A :class:`Transition` names the states it may start from, the state it moves to (``None``:
a *note*, a field-only update that keeps the state), the guard fields the caller must
compare (``expect``: e.g. the poll token, so a duplicated message loses) and the fields
the write removes. ``JobStore.apply`` is the only way to run one; the stages never spell
states or unset lists themselves. Every move is checked against the state table
(``TRANSITIONS`` in ``workers/jobs/state.py``) when this module is imported, every edge
of the table is some transition's (no dead edges), and the update script refuses a move
outside the table on its own. docs/job-states.md's table of transitions is tested
against :data:`ALL` (tests/workers/jobs/test_lifecycle.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nanobanana_queue.workers.jobs.state import ACTIVE_STATES, TRANSITIONS, JobState

Q, S, U, G, D = (
    JobState.QUEUED,
    JobState.SUBMITTING,
    JobState.OUTCOME_UNKNOWN,
    JobState.GENERATING,
    JobState.DOWNLOADING,
)


class IllegalTransitionError(ValueError):
    """A transition (or its use) that the state table or its own definition forbids."""


@dataclass(frozen=True)
class Transition:
    """One named change of a job record (a move, or a note when ``target`` is None)."""

    name: str
    sources: frozenset[JobState]
    target: JobState | None
    #: Fields the caller must pass in ``expect`` (exactly these): the write applies only
    #: while each holds the expected value.
    guards: tuple[str, ...] = ()
    #: Fields the write removes.
    unsets: tuple[str, ...] = ()
    doc: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.sources:
            raise IllegalTransitionError(f"{self.name}: no source state")
        if self.target is None:
            return
        for source in self.sources:
            if self.target not in TRANSITIONS[source]:
                raise IllegalTransitionError(
                    f"{self.name}: {source.value} → {self.target.value} is not in TRANSITIONS"
                )

    @property
    def is_note(self) -> bool:
        return self.target is None

    def only_from(self, *states: JobState) -> Transition:
        """The same change, allowed only from ``states`` (a subset of its sources): for a
        caller that must not act on a job that moved since it looked."""
        narrowed = frozenset(states)
        if not narrowed or not narrowed <= self.sources:
            raise IllegalTransitionError(
                f"{self.name}: {sorted(s.value for s in narrowed)} is not a subset of its sources"
            )
        if narrowed == self.sources:
            return self
        return Transition(self.name, narrowed, self.target, self.guards, self.unsets, self.doc)


def _move(
    name: str,
    sources: frozenset[JobState] | tuple[JobState, ...],
    target: JobState,
    *,
    guards: tuple[str, ...] = (),
    unsets: tuple[str, ...] = (),
    doc: str,
) -> Transition:
    return Transition(name, frozenset(sources), target, guards, unsets, doc)


def _note(
    name: str,
    sources: frozenset[JobState] | tuple[JobState, ...],
    *,
    guards: tuple[str, ...] = (),
    unsets: tuple[str, ...] = (),
    doc: str,
) -> Transition:
    return Transition(name, frozenset(sources), None, guards, unsets, doc)


# -- submit ---------------------------------------------------------------------------
CLAIM_SUBMIT = _move(
    "claim_submit", (Q,), S, doc="one submit worker wins the job; marks create_sent first"
)
HAND_BACK = _move(
    "hand_back", (S,), Q, doc="a create answered that no task exists (5xx, 429, quota): wait"
)
TASK_CREATED = _move(
    "task_created",
    (S,),
    G,
    unsets=("waiting_reason", "error", "callback_task_id"),
    doc="the create answered with a task id: poll it",
)
HOLD_UNKNOWN_OUTCOME = _move(
    "hold_unknown_outcome",
    (Q, S),
    U,
    doc="a create's answer was lost and callbacks are on: wait for its task's callback",
)
NOTE_WAITING = _note("note_waiting", (Q,), doc="why a queued job is not moving")
NOTE_TASK_OF_GONE_JOB = _note(
    "note_task_of_gone_job",
    (JobState.CANCELLED, JobState.FAILED),
    doc="a paid task created for a job cancelled or failed meanwhile (for the credits)",
)
# -- poll -----------------------------------------------------------------------------
CLAIM_POLL = _note(
    "claim_poll",
    (G,),
    guards=("poll_token",),
    doc="the poll carrying the current token takes the chain (a new token)",
)
POLL_PROGRESS = _note(
    "poll_progress", (G,), guards=("poll_token",), doc="still generating: progress, next poll"
)
POLL_COUNTED = _note(
    "poll_counted", (G,), guards=("poll_token",), doc="a poll's answer counted (before a failure)"
)
POLL_LATER = _note("poll_later", (G,), doc="the next poll is deferred (rate limit, API error)")
COMPLETED = _move(
    "completed",
    (G,),
    D,
    guards=("poll_token",),
    unsets=("poll_token", "next_poll_at"),
    doc="the task finished: its result links are recorded, download them",
)
RECREATE = _move(
    "recreate",
    (G,),
    Q,
    guards=("poll_token",),
    unsets=("evolink_task_id", "poll_token", "next_poll_at"),
    doc="a retryable task error: back to the queue for a fresh API task (bounded)",
)
CANCELLED_UPSTREAM = _move(
    "cancelled_upstream", (G,), JobState.CANCELLED, guards=("poll_token",), doc="the API says so"
)
# -- download -------------------------------------------------------------------------
OBJECT_STORED = _note("object_stored", (D,), doc="one result image is in the bucket")
STORED = _move(
    "stored",
    (D,),
    JobState.STORED,
    unsets=("result_urls",),
    doc="every image and the manifest are in the bucket",
)
# -- adopt (callbacks and people) -----------------------------------------------------
_ADOPT_UNSETS = (
    "waiting_reason",
    "error",
    "outcome_deadline_at",
    "callback_task_id",
    "adopt_consent_task_id",
)
ADOPT = _move(
    "adopt", (U,), G, unsets=_ADOPT_UNSETS, doc="a verified callback's task, re-fetched, is taken"
)
MANUAL_ADOPT = _move(
    "manual_adopt",
    (U, JobState.FAILED),
    G,
    unsets=_ADOPT_UNSETS,
    doc="a task a person found (`nbq adopt`), re-fetched, is taken",
)
ADOPT_FAILED_TASK = _move(
    "adopt_failed_task",
    (U,),
    JobState.FAILED,
    unsets=(
        "waiting_reason",
        "outcome_deadline_at",
        "callback_task_id",
        "adopt_consent_task_id",
        "result_urls",
    ),
    doc="the task to adopt had failed: the job ends failed with its reason (never pays again)",
)
NOTE_FAILED_TASK_ADOPTED = _note(
    "note_failed_task_adopted",
    (JobState.FAILED,),
    unsets=("callback_task_id", "adopt_consent_task_id"),
    doc="a person attached a task that had failed: the job stays failed with its reason",
)
CONSENT_PAY_TWICE = _note(
    "consent_pay_twice",
    (U, JobState.FAILED),
    doc="a person accepts that the task they adopt may be re-created (`nbq adopt --yes`)",
)
FORGET_DENIED_TASK = _note(
    "forget_denied_task",
    (U, JobState.FAILED),
    guards=("callback_task_id",),
    unsets=("callback_task_id",),
    doc="the API denies the task a callback named",
)
NOTE_ADOPT_REFUSED = _note(
    "note_adopt_refused",
    (U, JobState.FAILED),
    doc="the API refused the task a person asked to adopt (`nbq adopt` reports it at once)",
)
NOTE_CALLBACK_TASK = _note(
    "note_callback_task", (U,), doc="a verified callback named the task: adopt it"
)
NOTE_EARLY_CALLBACK = _note(
    "note_early_callback",
    (Q, S),
    guards=("evolink_task_id",),
    doc="a callback came before submit recorded the task: remember its id",
)
MANUAL_RETRY = _move(
    "manual_retry",
    (JobState.FAILED, U),
    Q,
    unsets=(
        "error",
        "evolink_task_id",
        "poll_token",
        "next_poll_at",
        "deadline_at",
        "outcome_deadline_at",
        "callback_task_id",
        "result_urls",
    ),
    doc="a person re-sends the create (`nbq retry`)",
)
# -- any stage ------------------------------------------------------------------------
FAIL = _move(
    "fail",
    ACTIVE_STATES,
    JobState.FAILED,
    unsets=("waiting_reason", "result_urls"),
    doc="a reason a person understands (error.code)",
)
FAIL_POLL = _move(
    "fail_poll",
    (G,),
    JobState.FAILED,
    guards=("poll_token",),
    unsets=FAIL.unsets,
    doc="the live poll chain's news fails the job (deadline, task failed, not found)",
)
EXPIRE_UNKNOWN_OUTCOME = _move(
    "expire_unknown_outcome",
    (U,),
    JobState.FAILED,
    unsets=FAIL.unsets,
    doc="no callback came by the deadline (reconciler): failed, reason outcome_unknown",
)
CANCEL = _move(
    "cancel",
    ACTIVE_STATES,
    JobState.CANCELLED,
    unsets=("poll_token", "result_urls", "waiting_reason"),
    doc="a cancel request (CLI, Python API, ingress)",
)
# -- reconciler -----------------------------------------------------------------------
RECOVER_SUBMIT = _move(
    "recover_submit",
    (S,),
    Q,
    guards=("updated_at",),
    doc="the submit worker died mid-create (reconciler; create_sent says if it was sent)",
)
REDRIVE = _note(
    "redrive",
    (Q, U, D),
    guards=("updated_at",),
    doc="the reconciler claims re-sending a lost message (nobody touched the job since)",
)

#: Every named transition, in the order of a job's life (docs/job-states.md lists them).
ALL: tuple[Transition, ...] = (
    CLAIM_SUBMIT,
    HAND_BACK,
    TASK_CREATED,
    HOLD_UNKNOWN_OUTCOME,
    NOTE_WAITING,
    NOTE_TASK_OF_GONE_JOB,
    CLAIM_POLL,
    POLL_PROGRESS,
    POLL_COUNTED,
    POLL_LATER,
    COMPLETED,
    RECREATE,
    CANCELLED_UPSTREAM,
    OBJECT_STORED,
    STORED,
    ADOPT,
    MANUAL_ADOPT,
    ADOPT_FAILED_TASK,
    NOTE_FAILED_TASK_ADOPTED,
    CONSENT_PAY_TWICE,
    FORGET_DENIED_TASK,
    NOTE_CALLBACK_TASK,
    NOTE_EARLY_CALLBACK,
    MANUAL_RETRY,
    FAIL,
    FAIL_POLL,
    EXPIRE_UNKNOWN_OUTCOME,
    CANCEL,
    RECOVER_SUBMIT,
    REDRIVE,
)


def edges(transitions: tuple[Transition, ...] = ALL) -> set[tuple[JobState, JobState]]:
    """Every (from, to) move the transitions make."""
    return {(s, t.target) for t in transitions if t.target is not None for s in t.sources}


def _check_table() -> None:
    """The table and the transitions agree both ways: no move outside the table (checked
    per transition) and no edge of the table that no transition makes."""
    table = {(s, t) for s, targets in TRANSITIONS.items() for t in targets}
    unused = table - edges()
    if unused:
        raise IllegalTransitionError(
            "TRANSITIONS edges no named transition makes: "
            + ", ".join(f"{s.value} → {t.value}" for s, t in sorted(unused))
        )
    names = [t.name for t in ALL]
    if len(names) != len(set(names)):
        raise IllegalTransitionError("two transitions share a name")


_check_table()


def markdown() -> str:
    """The transitions as docs/job-states.md shows them (a test keeps the two equal)."""
    order = {state: n for n, state in enumerate(JobState)}

    def states(group: frozenset[JobState]) -> str:
        return ", ".join(f"`{s.value}`" for s in sorted(group, key=order.__getitem__))

    def names(fields: tuple[str, ...]) -> str:
        return ", ".join(f"`{f}`" for f in fields) or "—"

    lines = [
        "| transition | from | to | guards (`expect`) | unsets | what it means |",
        "|---|---|---|---|---|---|",
    ]
    for t in ALL:
        to = f"`{t.target.value}`" if t.target is not None else "(note: same state)"
        lines.append(
            f"| `{t.name}` | {states(t.sources)} | {to} | {names(t.guards)} "
            f"| {names(t.unsets)} | {t.doc} |"
        )
    return "\n".join(lines)
