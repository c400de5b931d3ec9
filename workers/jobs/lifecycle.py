"""A job's life as named values: every write to a record is one of these, fields included.

A :class:`Transition` names the states it may start from, the state it moves to (``None``:
a *note*, a field-only update that keeps the state), the guard fields the caller must
compare (``expect``: e.g. the poll token, so a duplicated message loses), and **every
field it writes**: the values it fixes itself (``fixed``, e.g. ``task_created`` settles
the hold, ``credits_reserved = 0``), the fields whose value only the moment knows and the
caller supplies (``takes``; all required but the ``optional`` ones; each value checked
against ``JobRecord``'s type for it), the counters it adds a fixed amount to (``bumps``,
e.g. ``polls + 1``), the counters the caller adds a measured amount to (``counts``, e.g.
a task's charge), and the fields it removes (``unsets``). A caller cannot write any other
field, nor change a fixed one.

``JobStore.apply`` runs only the transitions of this table (``ALL``; one narrowed with
``only_from`` is still the table's), and the stages never spell states, unset lists or
settled values themselves. A record is *born* only by a :class:`Birth` of ``BIRTHS``
(``JobStore.create``): ``queued`` (an enqueue), ``generating`` (a rescue of a paid task
whose record vanished) or ``failed`` (a job refused at intake, or lost); the create
script refuses any other state on its own (the birth states are compiled into it).

Fields that are sub-states (a flag or a note that changes what a stage does) are owned
by the table: ``create_outcome_unknown`` is only ever *fixed* by a transition (never a
caller's value), ``callback_task_id`` is taken only by the two callback notes (and only
``forget_denied_task``, guarded by it, or a move that takes a task clears it),
``recovered_at`` is set only by the ``rescued`` birth. Checked when this module is
imported, with: every move is in the state table (``TRANSITIONS``,
``workers/jobs/state.py``), every edge of the table is some transition's (no dead edges),
names are unique. The update script refuses a move outside the table on its own.
docs/job-states.md's tables of transitions and births are tested against
:func:`markdown` and :func:`births_markdown` (tests/workers/jobs/test_lifecycle.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import ACTIVE_STATES, TRANSITIONS, JobState

Q, S, U, G, D = (
    JobState.QUEUED,
    JobState.SUBMITTING,
    JobState.OUTCOME_UNKNOWN,
    JobState.GENERATING,
    JobState.DOWNLOADING,
)

#: Fields no transition writes: the store stamps them (``updated_at``, ``t_<state>``) or
#: they are the record's identity and birth (``job_id``, ``state``, ``created_at``).
_STORE_OWNED = frozenset({"job_id", "state", "updated_at", "created_at", "state_times"})


class IllegalTransitionError(ValueError):
    """A transition (or its use) that the state table or its own definition forbids."""


@cache
def _adapter(name: str) -> TypeAdapter[Any]:
    """The validator of one ``JobRecord`` field's type (built once per field)."""
    annotation: Any = JobRecord.model_fields[name].annotation
    return TypeAdapter(annotation)


#: The exact Python types a plain field's value may have (checked without pydantic: a
#: write is on every stage's path); other fields go through their ``TypeAdapter``.
_PLAIN_TYPES: dict[Any, frozenset[type]] = {
    str: frozenset({str}),
    int: frozenset({int}),
    float: frozenset({float, int}),
    bool: frozenset({bool}),
    str | None: frozenset({str, type(None)}),
    float | None: frozenset({float, int, type(None)}),
}


@cache
def _plain(name: str) -> frozenset[type] | None:
    return _PLAIN_TYPES.get(JobRecord.model_fields[name].annotation)


def check_value(owner: str, name: str, value: Any) -> None:
    """``value`` is of ``JobRecord.<name>``'s type (strictly: no "1" for 1), else raise."""
    plain = _plain(name)
    if plain is not None and type(value) in plain:
        return
    try:
        _adapter(name).validate_python(value, strict=True)
    except ValidationError as exc:
        raise IllegalTransitionError(
            f"{owner}: {name}={value!r} is not a {JobRecord.model_fields[name].annotation}: "
            f"{exc.errors()[0]['msg']}"
        ) from None


def _record_fields(owner: str, names: tuple[str, ...], *, what: str) -> None:
    unknown = [n for n in names if n not in JobRecord.model_fields or n in _STORE_OWNED]
    if unknown:
        raise IllegalTransitionError(f"{owner}: {what} {unknown} are not writable record fields")


@dataclass(frozen=True)
class Transition:
    """One named change of a job record (a move, or a note when ``target`` is None), with
    every field it writes declared."""

    name: str
    sources: frozenset[JobState]
    target: JobState | None
    #: Fields the caller must pass in ``expect`` (exactly these): the write applies only
    #: while each holds the expected value.
    guards: tuple[str, ...] = ()
    #: Fields the write removes.
    unsets: tuple[str, ...] = ()
    doc: str = field(default="", compare=False)
    #: Fields the transition writes with these values, whoever runs it.
    fixed: tuple[tuple[str, Any], ...] = ()
    #: Fields whose value the caller supplies (what only the moment knows).
    takes: tuple[str, ...] = ()
    #: Of ``takes``, those the caller may leave out (the others are required).
    optional: tuple[str, ...] = ()
    #: Counters the transition adds these amounts to, whoever runs it.
    bumps: tuple[tuple[str, float], ...] = ()
    #: Counters the caller adds an amount of its own to (``incr``).
    counts: tuple[str, ...] = ()
    #: A note that leaves its state's index score (the job's last update time, the
    #: reconciler's idle clock) as it was: one index write fewer. Only for a note whose
    #: own run writes again right after (the poll's claim: its answer follows within one
    #: query) and that records what the reconciler checks instead (``next_poll_at``).
    keeps_index_time: bool = False

    def __post_init__(self) -> None:
        if not self.sources:
            raise IllegalTransitionError(f"{self.name}: no source state")
        if self.keeps_index_time and self.target is not None:
            raise IllegalTransitionError(f"{self.name}: only a note keeps its index time")
        self._check_fields()
        if self.target is None:
            return
        for source in self.sources:
            if self.target not in TRANSITIONS[source]:
                raise IllegalTransitionError(
                    f"{self.name}: {source.value} → {self.target.value} is not in TRANSITIONS"
                )

    def _check_fields(self) -> None:
        fixed = tuple(n for n, _ in self.fixed)
        bumps = tuple(n for n, _ in self.bumps)
        _record_fields(self.name, (*fixed, *self.takes, *self.unsets), what="fields")
        _record_fields(self.name, (*bumps, *self.counts), what="counters")
        written = [*fixed, *self.takes, *bumps, *self.counts]
        if len(written) != len(set(written)) or set(written) & set(self.unsets):
            raise IllegalTransitionError(f"{self.name}: a field is declared twice")
        if not set(self.optional) <= set(self.takes):
            raise IllegalTransitionError(f"{self.name}: optional fields it does not take")
        for name, value in self.fixed:
            check_value(self.name, name, value)

    @property
    def is_note(self) -> bool:
        return self.target is None

    def writes(
        self, fields: Mapping[str, Any], incr: Mapping[str, float] | None = None
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """The fields and increments one run writes: the caller's ``fields`` (exactly what
        the transition takes, each of its type) with the fixed values, ``incr`` (only
        its counters) with the fixed bumps. Raises ``IllegalTransitionError`` otherwise."""
        extra = set(fields) - set(self.takes)
        if extra:
            raise IllegalTransitionError(
                f"{self.name} cannot set {sorted(extra)} (it takes {list(self.takes)})"
            )
        missing = set(self.takes) - set(self.optional) - set(fields)
        if missing:
            raise IllegalTransitionError(f"{self.name} needs {sorted(missing)}")
        for name, value in fields.items():
            check_value(self.name, name, value)
        added = dict(incr or {})
        if not set(added) <= set(self.counts):
            raise IllegalTransitionError(
                f"{self.name} cannot add to {sorted(set(added) - set(self.counts))}"
            )
        return {**fields, **dict(self.fixed)}, {**added, **dict(self.bumps)}

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
        return replace(self, sources=narrowed)


@dataclass(frozen=True)
class Birth:
    """How a record may come to exist: its first state and the fields it must carry."""

    name: str
    state: JobState
    #: Fields a record born so must hold (not their defaults).
    requires: tuple[str, ...] = ()
    #: Sub-state fields (``SUBSTATE_FIELDS``) it may be born with (others: their defaults).
    may_hold: tuple[str, ...] = ()
    doc: str = ""

    def check(self, record: JobRecord) -> None:
        """Raise ``IllegalTransitionError`` unless ``record`` is born as this birth says."""
        defaults = JobRecord.model_fields
        missing = [n for n in self.requires if getattr(record, n) == defaults[n].get_default()]
        held = [
            n
            for n in SUBSTATE_FIELDS
            if n not in self.may_hold
            and getattr(record, n) != defaults[n].get_default(call_default_factory=True)
        ]
        if missing or held:
            raise IllegalTransitionError(
                f"a {self.state.value} record is born by {self.name}: "
                + (f"it needs {missing}" if missing else f"it cannot hold {held}")
            )


def _move(
    name: str,
    sources: frozenset[JobState] | tuple[JobState, ...],
    target: JobState,
    *,
    doc: str,
    guards: tuple[str, ...] = (),
    unsets: tuple[str, ...] = (),
    fixed: Mapping[str, Any] | None = None,
    takes: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
    bumps: Mapping[str, float] | None = None,
    counts: tuple[str, ...] = (),
) -> Transition:
    return Transition(
        name,
        frozenset(sources),
        target,
        guards,
        unsets,
        doc,
        tuple((fixed or {}).items()),
        takes,
        optional,
        tuple((bumps or {}).items()),
        counts,
    )


def _note(
    name: str,
    sources: frozenset[JobState] | tuple[JobState, ...],
    *,
    doc: str,
    guards: tuple[str, ...] = (),
    unsets: tuple[str, ...] = (),
    fixed: Mapping[str, Any] | None = None,
    takes: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
    bumps: Mapping[str, float] | None = None,
    counts: tuple[str, ...] = (),
    keeps_index_time: bool = False,
) -> Transition:
    return Transition(
        name,
        frozenset(sources),
        None,
        guards,
        unsets,
        doc,
        tuple((fixed or {}).items()),
        takes,
        optional,
        tuple((bumps or {}).items()),
        counts,
        keeps_index_time,
    )


#: A new API task's fields (a create's answer, an adoption): what the poll needs.
_TASK_FIELDS = ("evolink_task_id", "poll_token", "estimated_time_s", "deadline_at", "next_poll_at")
#: A charge is settled: the job's hold on the day's budget is now what it paid.
_SETTLED = {"credits_reserved": 0.0}

# -- submit ---------------------------------------------------------------------------
CLAIM_SUBMIT = _move(
    "claim_submit",
    (Q,),
    S,
    takes=("claimed_by", "first_create_at", "credits_reserved", "credits_held_on"),
    optional=("claimed_by", "first_create_at", "credits_reserved", "credits_held_on"),
    bumps={"attempts": 1},
    doc="one submit worker wins the job, before its create leaves (submitting = a create "
    "may be in flight); holds its price on the day's budget",
)
HAND_BACK = _move(
    "hand_back",
    (S,),
    Q,
    takes=("waiting_reason",),
    doc="a create answered that no task exists (5xx, 429, quota): wait",
)
HAND_BACK_UNKNOWN = _move(
    "hand_back_unknown",
    (S,),
    Q,
    takes=("waiting_reason",),
    fixed={"create_outcome_unknown": True},
    doc="a create's answer was lost and the operator's policy resends it: wait, flagged",
)
TASK_CREATED = _move(
    "task_created",
    (S,),
    G,
    unsets=("waiting_reason", "error", "callback_task_id"),
    takes=(*_TASK_FIELDS, "progress"),
    optional=("estimated_time_s", "deadline_at", "next_poll_at", "progress"),
    fixed={**_SETTLED, "create_outcome_unknown": False},
    bumps={"paid_creates": 1},
    counts=("credits_paid",),
    doc="the create answered with a task id: poll it",
)
HOLD_UNKNOWN_OUTCOME = _move(
    "hold_unknown_outcome",
    (Q, S),
    U,
    takes=("outcome_deadline_at", "waiting_reason"),
    fixed={"create_outcome_unknown": True},
    doc="a create's answer was lost and callbacks are on: wait for its task's callback",
)
NOTE_WAITING = _note(
    "note_waiting", (Q,), takes=("waiting_reason",), doc="why a queued job is not moving"
)
NOTE_TASK_OF_GONE_JOB = _note(
    "note_task_of_gone_job",
    (JobState.CANCELLED, JobState.FAILED),
    takes=("evolink_task_id",),
    fixed=_SETTLED,
    bumps={"paid_creates": 1},
    counts=("credits_paid",),
    doc="a paid task created for a job cancelled or failed meanwhile (for the credits)",
)
# -- poll -----------------------------------------------------------------------------
CLAIM_POLL = _note(
    "claim_poll",
    (G,),
    guards=("poll_token",),
    takes=("poll_token", "claimed_by", "next_poll_at"),
    optional=("claimed_by",),
    keeps_index_time=True,
    doc="the poll carrying the current token takes the chain (a new token); "
    "`next_poll_at` = now: the reconciler's sign that the poll is under way (the "
    "index's time is left as it was: the poll's answer writes next)",
)
POLL_PROGRESS = _note(
    "poll_progress",
    (G,),
    guards=("poll_token",),
    takes=("progress", "next_poll_at"),
    bumps={"polls": 1},
    doc="still generating: progress, next poll",
)
POLL_COUNTED = _note(
    "poll_counted",
    (G,),
    guards=("poll_token",),
    bumps={"polls": 1},
    doc="a poll's answer counted (before a failure)",
)
POLL_LATER = _note(
    "poll_later",
    (G,),
    takes=("next_poll_at",),
    doc="the next poll is deferred (rate limit, API error)",
)
COMPLETED = _move(
    "completed",
    (G,),
    D,
    guards=("poll_token",),
    takes=("result_urls",),
    fixed={"progress": 100},
    bumps={"polls": 1},
    doc="the task finished: its result links are recorded, download them (the poll "
    "fields stay until `stored`, which removes them with the links: one write fewer)",
)
RECREATE = _move(
    "recreate",
    (G,),
    Q,
    guards=("poll_token",),
    unsets=("evolink_task_id", "poll_token", "next_poll_at"),
    takes=("previous_task_ids", "waiting_reason", "error"),
    bumps={"polls": 1, "create_seq": 1},
    doc="a retryable task error: back to the queue for a fresh API task (bounded; a new "
    "create round, so a new idempotency key)",
)
CANCELLED_UPSTREAM = _move(
    "cancelled_upstream",
    (G,),
    JobState.CANCELLED,
    guards=("poll_token",),
    bumps={"polls": 1},
    doc="the API says so",
)
# -- download -------------------------------------------------------------------------
OBJECT_STORED = _note(
    "object_stored", (D,), takes=("objects",), doc="one result image is in the bucket"
)
STORED = _move(
    "stored",
    (D,),
    JobState.STORED,
    unsets=("result_urls", "poll_token", "next_poll_at"),
    takes=("objects",),
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
#: What taking a task writes (its create's hold is settled by the task's charge).
_ADOPT_WRITES: dict[str, Any] = {
    "takes": (*_TASK_FIELDS, "progress", "previous_task_ids"),
    "fixed": {**_SETTLED, "create_outcome_unknown": False},
    "counts": ("paid_creates", "credits_paid"),
}
ADOPT = _move(
    "adopt",
    (U,),
    G,
    unsets=_ADOPT_UNSETS,
    **_ADOPT_WRITES,
    doc="a verified callback's task, re-fetched, is taken",
)
MANUAL_ADOPT = _move(
    "manual_adopt",
    (U, JobState.FAILED),
    G,
    unsets=_ADOPT_UNSETS,
    **_ADOPT_WRITES,
    doc="a task a person found (`nbq adopt`), re-fetched, is taken",
)
#: What attaching a failed task writes (it is counted; the job stays or ends failed).
_FAILED_TASK_WRITES: dict[str, Any] = {
    "takes": ("error", "evolink_task_id", "previous_task_ids"),
    "fixed": {**_SETTLED, "create_outcome_unknown": False},
    "counts": ("paid_creates", "credits_paid"),
}
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
    **_FAILED_TASK_WRITES,
    doc="the task to adopt had failed: the job ends failed with its reason (never pays again)",
)
NOTE_FAILED_TASK_ADOPTED = _note(
    "note_failed_task_adopted",
    (JobState.FAILED,),
    unsets=("callback_task_id", "adopt_consent_task_id"),
    **_FAILED_TASK_WRITES,
    doc="a person attached a task that had failed: the job stays failed with its reason",
)
CONSENT_PAY_TWICE = _note(
    "consent_pay_twice",
    (U, JobState.FAILED),
    takes=("adopt_consent_task_id",),
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
    takes=("waiting_reason",),
    doc="the API refused the task a person asked to adopt (`nbq adopt` reports it at once)",
)
NOTE_CALLBACK_TASK = _note(
    "note_callback_task",
    (U,),
    takes=("callback_task_id",),
    doc="a verified callback named the task: adopt it",
)
NOTE_EARLY_CALLBACK = _note(
    "note_early_callback",
    (Q, S),
    guards=("evolink_task_id",),
    takes=("callback_task_id",),
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
    takes=("previous_task_ids", "create_seq", "waiting_reason"),
    fixed={"create_outcome_unknown": False},
    doc="a person re-sends the create (`nbq retry`; the same create round when its "
    "outcome is unknown, else a new one)",
)
# -- any stage ------------------------------------------------------------------------
_FAIL_UNSETS = ("waiting_reason", "result_urls")
FAIL = _move(
    "fail",
    ACTIVE_STATES,
    JobState.FAILED,
    unsets=_FAIL_UNSETS,
    takes=("error",),
    fixed=_SETTLED,
    doc="a reason a person understands (error.code); the job's hold is freed",
)
FAIL_POLL = _move(
    "fail_poll",
    (G,),
    JobState.FAILED,
    guards=("poll_token",),
    unsets=_FAIL_UNSETS,
    takes=("error",),
    fixed=_SETTLED,
    doc="the live poll chain's news fails the job (deadline, task failed, not found)",
)
FAIL_UNKNOWN_OUTCOME = _move(
    "fail_unknown_outcome",
    (Q, S),
    JobState.FAILED,
    unsets=_FAIL_UNSETS,
    takes=("error",),
    doc="a create's answer was lost and no callback can tell: failed, reason "
    "outcome_unknown; its hold stays (the create may have been charged)",
)
EXPIRE_UNKNOWN_OUTCOME = _move(
    "expire_unknown_outcome",
    (U,),
    JobState.FAILED,
    unsets=_FAIL_UNSETS,
    takes=("error",),
    doc="no callback came by the deadline (reconciler): failed, reason outcome_unknown; "
    "its hold stays",
)
CANCEL = _move(
    "cancel",
    ACTIVE_STATES,
    JobState.CANCELLED,
    unsets=("poll_token", "result_urls", "waiting_reason"),
    fixed=_SETTLED,
    doc="a cancel request (CLI, Python API, ingress)",
)
# -- reconciler -----------------------------------------------------------------------
RECOVER_SUBMIT = _move(
    "recover_submit",
    (S,),
    Q,
    guards=("updated_at",),
    fixed={"create_outcome_unknown": True, "waiting_reason": "recovered after a lost submit"},
    doc="the submit worker died mid-create (reconciler): its create may have left, so its "
    "outcome is unknown",
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
    HAND_BACK_UNKNOWN,
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
    NOTE_ADOPT_REFUSED,
    NOTE_CALLBACK_TASK,
    NOTE_EARLY_CALLBACK,
    MANUAL_RETRY,
    FAIL,
    FAIL_POLL,
    FAIL_UNKNOWN_OUTCOME,
    EXPIRE_UNKNOWN_OUTCOME,
    CANCEL,
    RECOVER_SUBMIT,
    REDRIVE,
)
_BY_NAME: dict[str, Transition] = {t.name: t for t in ALL}

#: Fields that change what a stage does (sub-states), and who alone may write them:
#: ``fixed`` (only as a transition's own value), ``takes`` (these transitions take it),
#: ``birth`` (only a record's birth sets it).
SUBSTATE_FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    # queued/submitting: an earlier create's outcome is unknown (never resent by default).
    "create_outcome_unknown": ("fixed", ()),
    # a task id a verified callback reported while the job could not take it yet.
    "callback_task_id": ("takes", ("note_callback_task", "note_early_callback")),
    # a record re-created from a message after it vanished (its request is unknown).
    "recovered_at": ("birth", ("rescued",)),
}

# -- births ---------------------------------------------------------------------------
ENQUEUED = Birth(
    "enqueued",
    Q,
    doc="a producer's (or a raw message's) valid request: the pipeline takes it from here",
)
RESCUED = Birth(
    "rescued",
    G,
    requires=("evolink_task_id", "poll_token", "recovered_at"),
    may_hold=("recovered_at",),
    doc="a paid task's message found its record vanished: re-recorded from the message "
    "(request unknown) and polled (workers/stages/rescue.py)",
)
REFUSED = Birth(
    "refused",
    JobState.FAILED,
    requires=("error",),
    doc="a job that cannot be taken (invalid request, over budget) or whose record was lost "
    "before it could finish: recorded failed so its sender reads why",
)
#: Every way a record comes to exist, one per birth state.
BIRTHS: tuple[Birth, ...] = (ENQUEUED, RESCUED, REFUSED)
_BIRTH_OF: dict[JobState, Birth] = {b.state: b for b in BIRTHS}


def birth_of(record: JobRecord) -> Birth:
    """The birth that creates ``record``; raises ``IllegalTransitionError`` if none may
    (a state no record is born in, a required field missing, a sub-state not its own)."""
    birth = _BIRTH_OF.get(record.state)
    if birth is None:
        raise IllegalTransitionError(
            f"no record is born {record.state.value} (births: "
            + ", ".join(f"{b.name} → {b.state.value}" for b in BIRTHS)
            + ")"
        )
    birth.check(record)
    return birth


def declared(transition: Transition) -> bool:
    """Whether ``transition`` is one of the table's (or one narrowed with ``only_from``)."""
    base = _BY_NAME.get(transition.name)
    if base is None:
        return False
    if transition is base:
        return True
    return transition.sources <= base.sources and _shape(transition) == _shape(base)


def _shape(t: Transition) -> tuple[Any, ...]:
    """Everything a transition is but its name, sources and words."""
    return (
        t.target,
        t.guards,
        t.unsets,
        t.fixed,
        t.takes,
        t.optional,
        t.bumps,
        t.counts,
        t.keeps_index_time,
    )


def edges(transitions: tuple[Transition, ...] = ALL) -> set[tuple[JobState, JobState]]:
    """Every (from, to) move the transitions make."""
    return {(s, t.target) for t in transitions if t.target is not None for s in t.sources}


def _check_substates() -> None:
    """Only their owners write the sub-state fields (``SUBSTATE_FIELDS``)."""
    births = {b.name for b in BIRTHS}
    for name, (how, owners) in SUBSTATE_FIELDS.items():
        takers = {t.name for t in ALL if name in t.takes}
        fixers = {t.name for t in ALL if name in dict(t.fixed)}
        allowed_takers = set(owners) if how == "takes" else set()
        if how != "fixed" and fixers:
            raise IllegalTransitionError(f"{name} is fixed by {sorted(fixers)}, not its owners")
        if takers - allowed_takers:
            raise IllegalTransitionError(
                f"{name} is a sub-state: {sorted(takers - allowed_takers)} cannot take it"
            )
        holders = {b.name for b in BIRTHS if name in b.may_hold}
        if holders - (set(owners) & births if how == "birth" else set()):
            raise IllegalTransitionError(f"{name}: births {sorted(holders)} cannot set it")


def _check_table() -> None:
    """The table and the transitions agree both ways: no move outside the table (checked
    per transition) and no edge of the table that no transition makes; names unique;
    the sub-state fields written only by their owners."""
    table = {(s, t) for s, targets in TRANSITIONS.items() for t in targets}
    unused = table - edges()
    if unused:
        raise IllegalTransitionError(
            "TRANSITIONS edges no named transition makes: "
            + ", ".join(f"{s.value} → {t.value}" for s, t in sorted(unused))
        )
    if len(_BY_NAME) != len(ALL):
        raise IllegalTransitionError("two transitions share a name")
    _check_substates()


_check_table()


def _code(fields: tuple[str, ...]) -> str:
    return ", ".join(f"`{f}`" for f in fields) or "—"


def _writes(t: Transition) -> str:
    """What a transition writes, in one cell: fixed values, taken fields, counters."""
    parts = [f"`{n}` = `{v!r}`" for n, v in t.fixed]
    parts += [f"`{n}`" + ("?" if n in t.optional else "") for n in t.takes]
    parts += [f"`{n}` += {v:g}" for n, v in t.bumps]
    parts += [f"`{n}` += n" for n in t.counts]
    return ", ".join(parts) or "—"


def markdown() -> str:
    """The transitions as docs/job-states.md shows them (a test keeps the two equal)."""
    order = {state: n for n, state in enumerate(JobState)}

    def states(group: frozenset[JobState]) -> str:
        return ", ".join(f"`{s.value}`" for s in sorted(group, key=order.__getitem__))

    lines = [
        "| transition | from | to | guards (`expect`) | writes | unsets | what it means |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in ALL:
        to = f"`{t.target.value}`" if t.target is not None else "(note: same state)"
        if t.keeps_index_time:
            to = "(note: same state, index time kept)"
        lines.append(
            f"| `{t.name}` | {states(t.sources)} | {to} | {_code(t.guards)} "
            f"| {_writes(t)} | {_code(t.unsets)} | {t.doc} |"
        )
    return "\n".join(lines)


def births_markdown() -> str:
    """The births as docs/job-states.md shows them (a test keeps the two equal)."""
    lines = ["| birth | state | requires | what it means |", "|---|---|---|---|"]
    for b in BIRTHS:
        lines.append(f"| `{b.name}` | `{b.state.value}` | {_code(b.requires)} | {b.doc} |")
    return "\n".join(lines)
