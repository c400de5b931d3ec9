"""Evolink callbacks: per-job URLs, their tokens, and what a delivery may trigger.

Callbacks carry no signature, so a delivery is only a hint that a task may have ended:

* the URL holds a token bound to the job, its create round and an expiry:
  ``<round>.<expires_at>.<HMAC-SHA256(NBQ_CALLBACK_SECRET, job_id \n round \n expires_at)>``.
  Nothing secret is stored per job; a token for one job is useless for another, a token
  of an earlier create round (a replayed delivery, or a URL read from an old create body
  or a proxy's log) is refused, and no token outlives the longest legitimate wait
  (``token_lifetime_s``: the poll deadline plus the outcome-unknown wait plus the vendor's
  retries);
* a task the body names must be the job's own: a task owned by another job
  (``workers/jobs/owners.py``) is refused at once (``refused``, counted in
  ``nbq_ownership_refused_total{entry="callback"}``), and the worker checks again (owner
  and the task's creation time) before any adoption or rescue;
* a delivery with a valid token for a ``generating`` job sends one immediate ``nbq.poll``
  carrying the job's current poll token. The poll stage claims that token atomically and
  re-fetches ``GET /v1/tasks/{id}`` before acting, so a forged or stale body changes
  nothing, and a duplicate poll finds a stale token and stops;
* a delivery for a job whose create outcome is unknown (``outcome_unknown``: the create's
  answer was lost) names the task that create made: one ``nbq.adopt`` re-fetches that
  task and, if the API knows it, makes it the job's — the paid task is recovered instead
  of paying for another. Arriving while the job is still ``submitting`` (or queued after
  a crash), the reported id is only noted on the record (``callback_task_id``) and the
  submit stage adopts it when it finds the outcome unknown;
* repeated deliveries (the vendor retries) are deduplicated with ``SET NX`` per job, task
  and reported status;
* nothing in the body is ever followed: result links come from the re-fetch;
* a valid delivery for a job with no record (the store lost it) sends a poll carrying the
  body's task id, which rescues the job (``workers/stages/rescue.py``).

Outcomes (what the receiver answers; none of them changes the job record):

=================  ====  ==========================================================
outcome            HTTP  when
=================  ====  ==========================================================
``poll_sent``      202   valid token, job generating: an immediate poll was sent
``adopt_sent``     202   valid token, job ``outcome_unknown``: its task is being adopted
``duplicate``      200   the same job/task/status was already handled
``ignored``        200   valid token, but the job ended or is on another task
``not_ready``      409   valid token, job still submitting (the vendor retries soon; the
                         reported task id is noted for adoption)
``refused``        403   valid token, but of an earlier create round, or naming a task
                         owned by another job: nothing noted, nothing sent
``rejected``       404   wrong, expired or missing token (same answer as an unknown job)
=================  ====  ==========================================================
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from enum import StrEnum
from urllib.parse import quote

from nanobanana_queue.workers import tracing
from nanobanana_queue.workers.jobs import lifecycle
from nanobanana_queue.workers.jobs.owners import owners_of
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.jobs.store import JobStore
from nanobanana_queue.workers.logs import get_logger
from nanobanana_queue.workers.settings import Settings
from nanobanana_queue.workers.stages.steps import Adopt, Poll, Send

log = get_logger("nbq.callbacks")

#: Path of the receiver, below ``NBQ_PUBLIC_CALLBACK_URL``.
CALLBACK_PATH = "/v1/callbacks/evolink/{job_id}"
#: How long a handled delivery is remembered (the vendor retries within ~7 s).
DEDUP_TTL_S = 3600
#: Statuses a callback body may report; anything else is recorded as ``other``.
KNOWN_STATUSES = frozenset({"pending", "processing", "completed", "failed", "cancelled"})


class CallbackOutcome(StrEnum):
    POLL_SENT = "poll_sent"  # an immediate poll re-fetches the task
    ADOPT_SENT = "adopt_sent"  # the job's create outcome was unknown: adopt the named task
    DUPLICATE = "duplicate"  # this delivery was already handled
    IGNORED = "ignored"  # valid, but nothing to do (job gone, ended, or another task)
    NOT_READY = "not_ready"  # the job has not recorded its task yet; ask for a retry
    REFUSED = "refused"  # valid token, but an earlier round's, or another job's task
    REJECTED = "rejected"  # the token does not match (or expired)

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self]


_HTTP_STATUS = {
    CallbackOutcome.POLL_SENT: 202,
    CallbackOutcome.ADOPT_SENT: 202,
    CallbackOutcome.DUPLICATE: 200,
    CallbackOutcome.IGNORED: 200,
    CallbackOutcome.NOT_READY: 409,
    CallbackOutcome.REFUSED: 403,
    CallbackOutcome.REJECTED: 404,
}

#: Longest task id noted from a callback body (real ids are ~40 characters).
MAX_TASK_ID_CHARS = 128


#: Added to the longest wait a token must cover: the vendor's retries (~7 s), clock skew.
TOKEN_GRACE_S = 600
#: Lifetime of a token made without settings (tests, tools).
DEFAULT_TOKEN_LIFETIME_S = 3600


def token_lifetime_s(settings: Settings) -> int:
    """How long a callback URL stays valid: the longest a legitimate delivery can come
    after its create (the poll deadline, then the outcome-unknown wait), plus a grace."""
    return int(settings.poll_deadline_s + settings.outcome_unknown_wait_s) + TOKEN_GRACE_S


def _mac(secret: str, job_id: str, create_round: int, expires_at: int) -> str:
    message = f"{job_id}\n{create_round}\n{expires_at}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def callback_token(
    secret: str, job_id: str, create_round: int = 1, *, expires_at: int | None = None
) -> str:
    """The token of one job's create round: ``<round>.<expires_at>.<hmac hex>``."""
    if expires_at is None:
        expires_at = int(time.time()) + DEFAULT_TOKEN_LIFETIME_S
    return f"{create_round}.{expires_at}.{_mac(secret, job_id, create_round, expires_at)}"


def token_round(
    secret: str, job_id: str, token: str | None, *, now: float | None = None
) -> int | None:
    """The create round a valid, unexpired token was made for; None for any other token."""
    if not token or len(token) > 256:
        return None
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    create_round, expires_at = int(parts[0]), int(parts[1])
    expected = _mac(secret, job_id, create_round, expires_at)
    if not hmac.compare_digest(expected.encode(), parts[2].encode()):
        return None
    if expires_at < (time.time() if now is None else now):
        return None
    return create_round


def token_matches(secret: str, job_id: str, token: str | None) -> bool:
    """A valid, unexpired token of ``job_id`` (any round)."""
    return token_round(secret, job_id, token) is not None


def callback_url(settings: Settings, job_id: str, create_round: int = 1) -> str | None:
    """``<public>/v1/callbacks/evolink/<job_id>?token=<token>``, or None when callbacks are
    off. The token is bound to ``create_round`` and expires after ``token_lifetime_s``."""
    base = settings.public_callback_url
    if not base or settings.callback_secret is None:
        return None
    token = callback_token(
        settings.callback_secret.get_secret_value(),
        job_id,
        create_round,
        expires_at=int(time.time()) + token_lifetime_s(settings),
    )
    path = CALLBACK_PATH.format(job_id=quote(job_id, safe=""))
    return f"{base}{path}?token={token}"


def reported_status_and_task(body: bytes) -> tuple[str, str | None]:
    """What the body claims, used only to deduplicate: ``(status, task id)``; never trusted."""
    try:
        data = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return "unparsed", None
    if not isinstance(data, dict):
        return "unparsed", None
    status = data.get("status")
    task_id = data.get("id")
    return (
        status if isinstance(status, str) and status in KNOWN_STATUSES else "other",
        task_id if isinstance(task_id, str) else None,
    )


def receive_callback(
    settings: Settings,
    store: JobStore,
    send: Send,
    *,
    job_id: str,
    token: str | None,
    body: bytes,
) -> CallbackOutcome:
    """Handle one delivery (fast: two Redis reads, one SET NX, one message).

    ``send`` dispatches the one step a delivery may lead to, now: a ``Poll`` (its task id
    lets the poll rescue a job whose record vanished) or an ``Adopt`` (the ingress passes
    its producer's dispatcher)."""
    secret = settings.callback_secret.get_secret_value() if settings.callback_secret else ""
    create_round = token_round(secret, job_id, token) if secret else None
    if create_round is None:
        log.warning("callback_rejected", job_id=job_id[:128])
        return CallbackOutcome.REJECTED
    record = store.get(job_id)
    status, body_task_id = reported_status_and_task(body)
    if body_task_id is not None and len(body_task_id) > MAX_TASK_ID_CHARS:
        body_task_id = None  # oversized: never a real id
    if body_task_id is not None:
        owner = owners_of(store).owner(body_task_id)
        if owner is not None and owner != job_id:
            return _refused(job_id, body_task_id, status, "foreign_task")
    if record is None and body_task_id is not None:
        return _rescue(settings, store, send, job_id, body_task_id, status)
    if record is None or record.is_terminal:
        return _logged(CallbackOutcome.IGNORED, job_id, None, status)
    if create_round != record.create_seq:
        # A token of an earlier create round: a late delivery for a replaced task, or a
        # replay of an old URL. Nothing of it may touch the current round.
        return _refused(job_id, body_task_id, status, "stale_round")
    if body_task_id is not None and body_task_id in record.previous_task_ids:
        body_task_id = None  # a late delivery for a task already replaced
    return _for_record(settings, store, send, record, body_task_id, status)


def _for_record(
    settings: Settings,
    store: JobStore,
    send: Send,
    record: JobRecord,
    body_task_id: str | None,
    status: str,
) -> CallbackOutcome:
    """A verified delivery of the job's current round: what its state lets it do."""
    job_id = record.job_id
    if record.state is JobState.OUTCOME_UNKNOWN and body_task_id:
        dedup_key = f"{settings.key_prefix}:callback:{job_id}:{body_task_id}:adopt"
        if not store.redis.set(dedup_key, "1", nx=True, ex=DEDUP_TTL_S):
            return _logged(CallbackOutcome.DUPLICATE, job_id, body_task_id, status)
        store.apply(lifecycle.NOTE_CALLBACK_TASK, job_id, callback_task_id=body_task_id)
        with tracing.resumed(record.traceparent):  # the job's trace (if tracing is on)
            send(Adopt(job_id, body_task_id, source="callback"))
        return _logged(CallbackOutcome.ADOPT_SENT, job_id, body_task_id, status)
    if record.state in (JobState.SUBMITTING, JobState.QUEUED) and (
        record.state is JobState.SUBMITTING or record.create_outcome_unknown
    ):
        # The create may have answered, but submit has not recorded the task yet (or its
        # answer was lost). Note the reported id: if the outcome turns out unknown, submit
        # adopts it instead of waiting for a delivery that already came.
        if body_task_id:
            store.apply(
                lifecycle.NOTE_EARLY_CALLBACK,
                job_id,
                expect={"evolink_task_id": None},
                callback_task_id=body_task_id,
            )
        return _logged(CallbackOutcome.NOT_READY, job_id, body_task_id, status)
    task_id = record.evolink_task_id
    if record.state is not JobState.GENERATING or not task_id:
        return _logged(CallbackOutcome.IGNORED, job_id, task_id, status)
    if body_task_id is not None and body_task_id != task_id:
        # A late delivery for a task this job has since replaced.
        return _logged(CallbackOutcome.IGNORED, job_id, task_id, status)
    dedup_key = f"{settings.key_prefix}:callback:{job_id}:{task_id}:{status}"
    if not store.redis.set(dedup_key, "1", nx=True, ex=DEDUP_TTL_S):
        return _logged(CallbackOutcome.DUPLICATE, job_id, task_id, status)
    with tracing.resumed(record.traceparent):  # the job's trace (if tracing is on)
        send(Poll(job_id, record.poll_token or "", evolink_task_id=task_id))
    return _logged(CallbackOutcome.POLL_SENT, job_id, task_id, status)


def _rescue(
    settings: Settings,
    store: JobStore,
    send: Send,
    job_id: str,
    task_id: str,
    status: str,
) -> CallbackOutcome:
    """A verified delivery for a job with no record: the store lost it. The poll it sends
    carries the body's task id; the worker re-records the job once and re-fetches the task
    with our key before trusting anything (workers/stages/rescue.py)."""
    dedup_key = f"{settings.key_prefix}:callback:{job_id}:{task_id}:{status}"
    if not store.redis.set(dedup_key, "1", nx=True, ex=DEDUP_TTL_S):
        return _logged(CallbackOutcome.DUPLICATE, job_id, task_id, status)
    log.error("callback_for_missing_job", job_id=job_id, evolink_task_id=task_id)
    send(Poll(job_id, "", evolink_task_id=task_id))
    return _logged(CallbackOutcome.POLL_SENT, job_id, task_id, status)


def _refused(job_id: str, task_id: str | None, status: str, reason: str) -> CallbackOutcome:
    from nanobanana_queue.workers import metrics

    metrics.ownership_refused("callback", reason)
    log.warning("callback_refused", job_id=job_id, evolink_task_id=task_id, reason=reason)
    return _logged(CallbackOutcome.REFUSED, job_id, task_id, status)


def _logged(
    outcome: CallbackOutcome, job_id: str, task_id: str | None, status: str
) -> CallbackOutcome:
    log.info(
        "callback_received",
        job_id=job_id,
        evolink_task_id=task_id,
        reported_status=status,
        outcome=outcome.value,
    )
    return outcome
