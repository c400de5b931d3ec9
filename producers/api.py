"""The Python API for other services: validate, record, send ``nbq.generate``.

    from nanobanana_queue.producers import Producer

    producer = Producer()
    job = producer.enqueue({"prompt": "a lighthouse at dawn", "size": "16:9"})
    record = job.wait(timeout_s=300)
    for image in job.results():
        print(image.key, image.url)

Bad input raises :class:`InvalidRequestError` naming the field, and nothing is enqueued.
A caller-chosen ``job_id`` is an idempotency key: enqueuing the same request under it
twice returns the same job and never creates a second API task; a different request
under a used id raises :class:`JobIdConflictError` (nothing enqueued).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from celery import Celery
from kombu.exceptions import KombuError
from pydantic import ValidationError

from nanobanana_queue.producers.errors import (
    CreditBudgetExceededError,
    EnqueueUncertainError,
    InvalidRequestError,
    JobIdConflictError,
    JobNotFoundError,
    JobNotStoredError,
    WaitTimeoutError,
)
from nanobanana_queue.producers.publish import one_trip_possible, send_with_record
from nanobanana_queue.workers import tracing
from nanobanana_queue.workers.dispatch import Dispatcher
from nanobanana_queue.workers.errors import PipelineError
from nanobanana_queue.workers.evolink.models import GenerationRequest, Task
from nanobanana_queue.workers.extras import MissingExtraError
from nanobanana_queue.workers.jobs.durability import check_settings_stores
from nanobanana_queue.workers.jobs.ids import (
    InvalidJobIdError,
    is_stored_job_id,
    new_job_id,
    scoped_job_id,
    validate_producer,
)
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from nanobanana_queue.workers.logs import get_logger
from nanobanana_queue.workers.resilience.credits import CreditLedger, Hold, price_of, refusal
from nanobanana_queue.workers.resilience.fairshare import PRIORITIES
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import Settings, get_settings
from nanobanana_queue.workers.stages.cancel import cancel_job
from nanobanana_queue.workers.stages.intake import describe_validation_error, intake
from nanobanana_queue.workers.stages.steps import Adopt, Generate, Submit
from nanobanana_queue.workers.startup import configure_process
from nanobanana_queue.workers.storage.manifest import manifest_key, record_from_manifest

if TYPE_CHECKING:
    from nanobanana_queue.workers.notify.config import NotifyConfig
    from nanobanana_queue.workers.storage.s3 import ObjectStore


@dataclass(frozen=True)
class StoredImage:
    """One stored result: its object key, a presigned URL and its checksum."""

    key: str
    url: str
    sha256: str
    size: int
    content_type: str


#: What a broken Redis connection or a failed kombu publish raise.
_BROKER_ERRORS = (KombuError, redis.RedisError, OSError)

log = get_logger("nbq.producer")

#: ``wait``'s safety net: a re-read this often even when no push came (seconds).
SAFETY_REREAD_S = 5.0


def generate_step(record: JobRecord, settings: Settings | None = None) -> Generate:
    """``nbq.generate`` for a recorded job: enough for a worker to write the same record
    itself (the request as its validated API JSON), with the producer's proof when
    ``settings`` hold NBQ_PRODUCER_SECRET (a worker that reads the message before the
    record records it only with that proof: workers/producer_keys.py)."""
    from nanobanana_queue.workers.producer_keys import proof_for

    return Generate(
        job_id=record.job_id,
        request=record.request,
        producer=record.producer,
        batch_id=record.batch_id,
        priority=record.priority,
        notify_url=record.notify_url,
        on_done=(
            {"task": record.on_done_task, "queue": record.on_done_queue}
            if record.on_done_task and record.on_done_queue
            else None
        ),
        producer_proof=proof_for(settings, record.producer, record.job_id) if settings else None,
    )


def _check_priority(priority: object) -> None:
    """``high | normal | low``; anything else is the caller's error, nothing enqueued."""
    if priority not in PRIORITIES:
        raise InvalidRequestError(
            f"priority {str(priority)[:20]!r}: use one of {', '.join(PRIORITIES)}",
            field="priority",
        )


def validate_request(request: GenerationRequest | Mapping[str, Any]) -> GenerationRequest:
    """The shared model's checks, as a typed error naming the (first) field."""
    if isinstance(request, GenerationRequest):
        return request
    if not isinstance(request, Mapping):
        raise InvalidRequestError(
            f"request must be a mapping of fields such as {{'prompt': ...}}, "
            f"not {type(request).__name__}"
        )
    try:
        return GenerationRequest.model_validate(dict(request))
    except ValidationError as exc:
        loc = exc.errors()[0]["loc"]
        raise InvalidRequestError(
            describe_validation_error(exc), field=".".join(str(p) for p in loc) or None
        ) from None
    except TypeError as exc:
        raise InvalidRequestError(f"request must be a mapping of fields: {exc}") from None


def _checked_on_done(value: Mapping[str, str] | None) -> tuple[str, str] | None:
    from nanobanana_queue.workers.notify.on_done import OnDoneError, check_on_done

    try:
        return check_on_done(dict(value) if value is not None else None)
    except OnDoneError as exc:
        raise InvalidRequestError(str(exc), field="on_done") from None


class Producer:
    """Enqueue jobs and follow them. Thread-safe; create one per process."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        celery_app: Celery | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.runtime = runtime or Runtime.from_settings(self.settings)
        #: Record + message in one Redis round trip (producers/publish.py); only when the
        #: job store (possibly a runtime passed in) is the broker's Redis.
        self._one_trip = one_trip_possible(self.settings) and (
            self.runtime.settings.job_store_url == self.settings.broker_url
        )
        if celery_app is None:
            from nanobanana_queue.workers.app import create_app

            celery_app = create_app(self.settings)
        self.celery = celery_app
        #: Every message this producer sends (enqueue, retry, adopt, callbacks' polls).
        self.dispatcher = Dispatcher.for_settings(celery_app, self.settings)
        self._manifests: ObjectStore | None = None  # status fallback (lookup)
        self._notify_config: NotifyConfig | None = None  # parsed on the first notify_url
        # A cancel through this producer ends a job too: its webhook goes out from here.
        self.runtime.install_notify(self.dispatcher.send, self.celery.send_task)
        #: The day's credit book with this producer's budgets (a job holds its price).
        self._ledger = CreditLedger(
            self.runtime.redis,
            prefix=self.settings.key_prefix,
            limit_daily=self.settings.credit_limit_daily,
            limit_daily_per_producer=self.settings.credit_limit_daily_per_producer,
        )
        # Refuse a store that would lose jobs silently (NBQ_ALLOW_VOLATILE_STORE=true
        # accepts). After configure_process: it sends the project's logs to stderr, so a
        # warning here never mixes into a command's --json output (unless the host
        # service configured structlog itself: then its configuration stays).
        configure_process(self.settings, keep_host_logging=True)
        # An accepted risk (NBQ_ALLOW_VOLATILE_STORE) is the worker's to say, once at start.
        check_settings_stores(self.runtime.settings, store_client=self.runtime.redis, warn=False)

    def enqueue(
        self,
        request: GenerationRequest | Mapping[str, Any],
        *,
        job_id: str | None = None,
        producer: str | None = None,
        batch_id: str | None = None,
        priority: str = "normal",
        notify_url: str | None = None,
        on_done: Mapping[str, str] | None = None,
    ) -> JobHandle:
        """Validate, write the job record, send ``nbq.generate``; returns the job's handle.

        ``priority`` (``high | normal | low``) orders this producer's own jobs: a high job
        goes before the producer's normal backlog, never before another producer's share.

        A caller-chosen ``job_id`` is scoped to ``producer``: the handle's ``job_id`` is
        the stored id (``alice~order-1``; unchanged without a producer), and another
        producer's job of the same id is never returned. The same request under a used id
        returns that job; a different one raises :class:`JobIdConflictError`.

        ``notify_url``: where the job's end is told, as a signed webhook (docs/webhooks.md);
        refused (:class:`InvalidRequestError`, field ``notify_url``) when the producer has no
        secret in NBQ_NOTIFY_SECRETS or the URL is not a safe public https URL.
        ``on_done={"task": "shop.image_ready", "queue": "shop"}``: that Celery task is sent to
        that queue with the job's public view (``job=``) when the job ends.
        """
        with tracing.enqueue_span(producer) as span:  # the root of the job's trace (if on)
            handle = self._enqueue(
                request,
                job_id=job_id,
                producer=producer,
                batch_id=batch_id,
                priority=priority,
                notify_url=notify_url,
                on_done=on_done,
            )
            if span is not None:
                span.set_attribute(tracing.ATTR_JOB_ID, handle.job_id)
            return handle

    def _enqueue(
        self,
        request: GenerationRequest | Mapping[str, Any],
        *,
        job_id: str | None,
        producer: str | None,
        batch_id: str | None,
        priority: str,
        notify_url: str | None,
        on_done: Mapping[str, str] | None,
    ) -> JobHandle:
        valid = validate_request(request)
        _check_priority(priority)
        for name, value in (("job_id", job_id), ("producer", producer), ("batch_id", batch_id)):
            if value is not None and not isinstance(value, str):
                raise InvalidRequestError(
                    f"{name} must be a string, not {type(value).__name__}", field=name
                )
        chosen = job_id
        if producer is not None:
            try:
                validate_producer(producer)
            except InvalidJobIdError as exc:
                raise InvalidRequestError(str(exc), field="producer") from None
        self._check_notify(valid, producer, notify_url)
        done = _checked_on_done(on_done)
        if job_id is not None:
            try:
                job_id = scoped_job_id(producer, job_id)
            except InvalidJobIdError as exc:
                raise InvalidRequestError(str(exc), field="job_id") from None
        ledger = self._ledger
        if job_id is not None and ledger.budgeted:
            # A used id holds nothing again (it is the same job, or a conflict).
            existing = self.runtime.store.get(job_id)
            if existing is not None:
                return self._known(existing, valid, chosen)
        held: Hold | None = None
        if ledger.budgeted:
            fresh = job_id is None
            job_id = job_id or scoped_job_id(producer, new_job_id())
            held = self._hold(job_id, valid, producer)
            if fresh and self._one_trip:
                return self._enqueue_new(
                    valid,
                    job_id=job_id,
                    producer=producer,
                    batch_id=batch_id,
                    held=held,
                    priority=priority,
                    notify_url=notify_url,
                    on_done=done,
                )
        elif job_id is None and self._one_trip:
            return self._enqueue_new(
                valid,
                producer=producer,
                batch_id=batch_id,
                notify_url=notify_url,
                on_done=done,
                priority=priority,
            )
        record = intake(
            self.runtime,
            request=valid,
            job_id=job_id,
            producer=producer,
            batch_id=batch_id,
            held=held,
            priority=priority,
            notify_url=notify_url,
            on_done=done,
        )
        assert record is not None
        return self._known(record, valid, chosen)

    def _known(self, record: JobRecord, valid: GenerationRequest, chosen: str | None) -> JobHandle:
        """The handle of a recorded job (sent if it never was); a conflict if a chosen id
        names another request."""
        if chosen is not None and not record.holds_request(valid.to_api_json()):
            raise JobIdConflictError(chosen)
        if record.state is JobState.QUEUED and record.attempts == 0 and not record.waiting_reason:
            # New (or never picked up): send. A duplicate message is harmless — submit's
            # queued → submitting transition has exactly one winner.
            self._send_recorded(record)
        return JobHandle(self, record.job_id)

    def _hold(self, job_id: str, valid: GenerationRequest, producer: str | None) -> Hold:
        """The job's price held on today's budget (one atomic script), or refused: a clear
        error naming the budget, never a silent drop; nothing is enqueued."""
        ledger = self._ledger
        price = price_of(valid.to_api_json())
        held = ledger.hold(job_id, price, producer=producer)
        if not held.held:
            budget = (
                "NBQ_CREDIT_LIMIT_DAILY_PER_PRODUCER"
                if held.budget == "producer"
                else "NBQ_CREDIT_LIMIT_DAILY"
            )
            raise CreditBudgetExceededError(
                refusal(held, ledger, price=price, producer=producer) + "; nothing was enqueued",
                budget=budget,
            )
        return held

    def _send_recorded(self, record: JobRecord) -> None:
        """Publish a recorded job's message (the two-step path: a broker other than the
        store's Redis, e.g. RabbitMQ with confirms). If the broker fails, the record is
        already written, so the job is not lost (the reconciler sends a queued job's
        missing message after NBQ_STUCK_AFTER_S); the caller still learns of it, with the
        id to enqueue again (idempotent) if it wants to be sure now."""
        try:
            self.dispatcher.send(generate_step(record, self.settings))
        except _BROKER_ERRORS as exc:
            raise EnqueueUncertainError(
                record.job_id,
                f"{type(exc).__name__} publishing to the broker; the job is recorded and the "
                "reconciler sends it once the broker is back",
            ) from exc

    def _check_notify(
        self, valid: GenerationRequest, producer: str | None, notify_url: str | None
    ) -> None:
        """Refuse before anything is written: a webhook nobody can verify, an unsafe URL, or
        an own callback_url the project's callbacks would silently replace."""
        from nanobanana_queue.workers.notify.config import (
            NotifyConfig,
            NotifyRefusedError,
            own_callback_refusal,
        )

        refusal = own_callback_refusal(self.settings, valid)
        if refusal is not None:
            raise InvalidRequestError(refusal, field="callback_url")
        if notify_url is None:
            return
        if self._notify_config is None:
            try:
                self._notify_config = NotifyConfig.from_settings(self.settings)
            except ValueError as exc:
                raise InvalidRequestError(str(exc), field="notify_url") from None
        try:
            self._notify_config.check(producer, notify_url)
        except NotifyRefusedError as exc:
            raise InvalidRequestError(str(exc), field="notify_url") from None

    def _enqueue_new(
        self,
        valid: GenerationRequest,
        *,
        producer: str | None,
        batch_id: str | None,
        job_id: str | None = None,
        held: Hold | None = None,
        priority: str = "normal",
        notify_url: str | None = None,
        on_done: tuple[str, str] | None = None,
    ) -> JobHandle:
        """A fresh id cannot exist yet: record and message go out in one round trip."""
        record = JobRecord(
            job_id=job_id or scoped_job_id(producer, new_job_id()),
            request=valid.to_api_json(),
            producer=producer,
            batch_id=batch_id,
            priority=priority,
            traceparent=tracing.current_traceparent(),
            notify_url=notify_url,
            on_done_task=on_done[0] if on_done else None,
            on_done_queue=on_done[1] if on_done else None,
            **(held.record_fields() if held else {}),
        )
        try:
            record, batched = send_with_record(
                self.dispatcher,
                self.runtime.store,
                record,
                generate_step(record, self.settings),
                also=self.runtime.fair().enqueued_command(
                    record.job_id, record.producer, record.priority
                ),
            )
        except _BROKER_ERRORS as exc:
            # The pipeline broke somewhere: the message, the record, both or neither may
            # be in Redis. Make sure of the record (then the job cannot be lost: the
            # reconciler re-sends a recorded job's missing message) and send again (a
            # duplicate message is harmless).
            return self._finish_enqueue(record, reason=type(exc).__name__)
        if not batched:
            self._one_trip = False  # this transport does not batch: use the two-step path
            return self._finish_enqueue(record, reason=None)
        return JobHandle(self, record.job_id)

    def _finish_enqueue(self, record: JobRecord, *, reason: str | None) -> JobHandle:
        """Record first (if missing), then send; only a missing record is an error."""
        try:
            self.runtime.store.create(record)  # idempotent: keeps a record already written
        except _BROKER_ERRORS as exc:
            raise EnqueueUncertainError(record.job_id, reason or type(exc).__name__) from exc
        self.runtime.fair().enqueued(record.job_id, record.producer, record.priority)
        try:
            self.dispatcher.send(generate_step(record, self.settings))
        except _BROKER_ERRORS as exc:
            log.warning(
                "enqueue_message_not_sent",
                job_id=record.job_id,
                error=type(exc).__name__,
                recovery="the reconciler re-sends it (NBQ_STUCK_AFTER_S)",
            )
        return JobHandle(self, record.job_id)

    def job(self, job_id: str) -> JobHandle:
        handle = JobHandle(self, job_id)
        handle.status()  # raises JobNotFoundError early
        return handle

    def status(self, job_id: str) -> JobRecord:
        record = self.lookup(job_id)
        if record is None:
            raise JobNotFoundError(job_id)
        return record

    def lookup(self, job_id: str) -> JobRecord | None:
        """The job's record; after it expired (or was lost), the one its S3 manifest holds.

        The manifest is the durable record of a stored job; ``None`` when neither exists
        (or S3 cannot say: not configured or unreachable).
        """
        record = self.runtime.store.get(job_id)
        if record is not None:
            return record
        return self._from_manifest(job_id)

    def _from_manifest(self, job_id: str) -> JobRecord | None:
        if self.settings.s3_access_key is None or self.settings.s3_secret_key is None:
            return None
        if not is_stored_job_id(job_id):
            return None
        try:
            if self._manifests is None:
                from nanobanana_queue.workers.storage.s3 import ObjectStore

                # Short timeouts, no retries: a status answer must not hang on S3.
                self._manifests = ObjectStore.from_settings(
                    self.settings, connect_timeout_s=2.0, read_timeout_s=5.0, retries=0
                )
            data = self._manifests.get_json(manifest_key(self.settings.s3_prefix, job_id))
            return None if data is None else record_from_manifest(data)
        except (PipelineError, ValueError, MissingExtraError) as exc:
            log.warning("status_manifest_unreadable", job_id=job_id, error=str(exc)[:200])
            return None

    def cancel(self, job_id: str) -> JobRecord:
        return cancel_job(self.runtime.store, job_id)

    def retry(self, job_id: str, *, accept_may_pay_twice: bool = False) -> JobRecord:
        """Re-send a failed job's create (``nbq retry``); the job goes back to ``queued``.

        A job whose last create's outcome is unknown may already have a paid task, and a
        job that failed for a permanent reason (``retryable: false``, e.g.
        ``content_policy_violation``) would pay again for a create the API most likely
        refuses again: both raise :class:`MayPayTwiceError` (its message says which)
        unless ``accept_may_pay_twice`` (``--yes``).
        """
        from nanobanana_queue.workers.stages import manual

        # JobNotFoundError, MayPayTwiceError, JobActionRefusedError: raised as they are.
        record = manual.resubmit_job(
            self.runtime.store, job_id, accept_may_pay_twice=accept_may_pay_twice
        )
        self.dispatcher.send(Submit(job_id))
        return record

    def adopt(self, job_id: str, task_id: str, *, accept_may_pay_twice: bool = False) -> JobRecord:
        """Attach a task a person found (``nbq adopt``) to a failed or unknown-outcome job.

        A worker re-fetches the task and, if the API knows it and it is the job's (no other
        job owns it, it was not created before the job's first create), moves the job on
        to polling (``nbq.adopt``); returns the record as it was when the request was sent.
        A task owned by another job raises :class:`JobActionRefusedError` here already.
        Adoption never pays: a task that had failed ends the job failed with its reason,
        unless ``accept_may_pay_twice`` (``--yes``, as for :meth:`retry`) lets a retryable
        failure be re-created.
        """
        from nanobanana_queue.workers.stages import manual

        record = manual.check_adoptable(
            self.runtime.store, job_id, task_id, accept_may_pay_twice=accept_may_pay_twice
        )
        self.dispatcher.send(Adopt(job_id, task_id, source="person"))
        return record

    def task_facts(self, task_id: str) -> Task | None:
        """The task as the API shows it (its ``created`` time, status), or None when this
        process has no API key or the API cannot say (for ``nbq adopt``'s check)."""
        if self.runtime.settings.evolink_api_key is None:
            return None
        from nanobanana_queue.workers.errors import EvolinkError

        try:
            return self.runtime.api().get_task(task_id)
        except EvolinkError:
            return None

    def wait(
        self, job_id: str, *, timeout_s: float | None = None, interval_s: float = SAFETY_REREAD_S
    ) -> JobRecord:
        """Block until the job is stored, failed or cancelled (reads Redis, not the API).

        Woken by a push: the job's end is published (``workers/notify/push.py``) and this
        call is subscribed to it before it reads the record, so it returns within a round
        trip of the end. ``interval_s`` is only the safety net's re-read (a publisher that
        died between its write and its publish, a Sentinel failover).
        """
        from nanobanana_queue.workers.notify.push import job_end_channel

        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        pubsub = self._subscribe(job_end_channel(self.settings.key_prefix, job_id))
        try:
            while True:
                record = self.status(job_id)
                if record.is_terminal:
                    return record
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise WaitTimeoutError(
                        f"job {job_id} still {record.state.value} after {timeout_s}s"
                    )
                pause = interval_s if left is None else min(interval_s, left)
                pubsub = self._await_push(pubsub, job_id, pause)
        finally:
            if pubsub is not None:
                pubsub.close()

    def _subscribe(self, channel: str) -> Any:
        """A subscription to ``channel``; None when the store cannot subscribe now (then
        the safety net's re-reads carry the wait)."""
        try:
            pubsub = self.runtime.redis.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(channel)
            return pubsub
        except redis.RedisError:
            return None

    def _await_push(self, pubsub: Any, job_id: str, pause_s: float) -> Any:
        """Wait up to ``pause_s`` for the job's end to be pushed; resubscribe after a
        lost connection (a failover)."""
        from nanobanana_queue.workers.notify.push import job_end_channel

        if pubsub is None:
            time.sleep(pause_s)
            return self._subscribe(job_end_channel(self.settings.key_prefix, job_id))
        try:
            pubsub.get_message(timeout=pause_s)
            return pubsub
        except redis.RedisError:
            pubsub.close()
            time.sleep(min(pause_s, 0.5))
            return self._subscribe(job_end_channel(self.settings.key_prefix, job_id))

    def close(self) -> None:
        """Release this producer's connections (Redis, the broker's pool)."""
        self.runtime.redis.close()
        self.celery.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def results(self, job_id: str, *, expiry_s: int | None = None) -> list[StoredImage]:
        record = self.status(job_id)
        if record.state is not JobState.STORED:
            raise JobNotStoredError(f"job {job_id} is {record.state.value}, not stored")
        objects = self.runtime.objects()
        expiry = expiry_s or self.settings.presign_expiry_s
        return [
            StoredImage(
                key=o.key,
                url=objects.presigned_get_url(o.key, expiry),
                sha256=o.sha256,
                size=o.size,
                content_type=o.content_type,
            )
            for o in record.objects
        ]


class JobHandle:
    """A job id with the calls that follow it."""

    def __init__(self, producer: Producer, job_id: str) -> None:
        self.producer = producer
        self.job_id = job_id

    def __repr__(self) -> str:
        return f"JobHandle({self.job_id!r})"

    def status(self) -> JobRecord:
        return self.producer.status(self.job_id)

    def wait(
        self, timeout_s: float | None = None, *, interval_s: float = SAFETY_REREAD_S
    ) -> JobRecord:
        return self.producer.wait(self.job_id, timeout_s=timeout_s, interval_s=interval_s)

    def results(self, *, expiry_s: int | None = None) -> list[StoredImage]:
        return self.producer.results(self.job_id, expiry_s=expiry_s)

    def cancel(self) -> JobRecord:
        return self.producer.cancel(self.job_id)
