"""The worker's consumer with the guard in front: every message is checked on receipt.

Why here (``worker_consumer``), and not a task ``Strategy`` or ``Request`` class: the
consumer's ``on_task_received`` is the one place every message passes — unknown task
names never reach a strategy, and a per-task strategy would have to be set on each task
(and on any task added later). Checking before Celery's own handler means nothing of a
hostile message is parsed by Celery at all, and an ETA beyond the horizon is acked off
the queue before the worker holds it (``worker_eta_task_limit`` never fills). Celery's
own refusal handlers (unknown task, invalid task, decode error, unknown message) are
overridden too, and anything Celery still raises while taking a message that passed the
check is caught: each ends in the dead-letter store, acked, never a crashed consumer.
Broker connection errors still propagate (Celery reconnects on those).

Enabled by ``worker_consumer`` in ``workers/app.py``; broker-agnostic (only kombu's
``Message`` interface is used).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from celery.worker.consumer import Consumer
from vine import promise as vine_promise

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.deadletters import DeadLetter, DeadLetterStore, build_letter
from nanobanana_queue.workers.guard import redis_transport
from nanobanana_queue.workers.guard.inspect import Limits, Refusal, inspect_message
from nanobanana_queue.workers.logs import get_logger
from nanobanana_queue.workers.settings import get_settings

log = get_logger("nbq.guard")

DELAYED_DELIVERY_STEP: Final = "nanobanana_queue.workers.guard.delayed:DeclaringDelayedDelivery"

#: How long a worker holds its buffered task events (received/started/succeeded...)
#: before publishing them as one ``task.multi`` message. Celery flushes on the next
#: event-loop tick, one PUBLISH per ~2 events; a short delay groups a busy worker's events
#: (up to Celery's buffer limit of 24 each) and Flower sees every event, this much later.
#: Redis broker only (``GuardedConsumer._nbq_events_on_redis``).
EVENT_FLUSH_DELAY_S = 0.1


#: Retry of held letters while the store is down: first after this long, doubling up to
#: ``HOLD_RETRY_MAX_S`` (one write attempt per period for all held messages: no hot loop).
HOLD_RETRY_FIRST_S = 1.0
HOLD_RETRY_MAX_S = 30.0


class DeadLetterer:
    """Writes a refused message to the store, counts it and acks it off its queue.

    If the write fails (the store down) the message is not acked: it is *held* unacked,
    with the consumer's prefetch raised by one (as Celery does for an ETA message it
    holds) so good messages keep flowing, and the write is retried on the worker's event
    loop with backoff; written, it is acked. A worker that stops (or loses its broker
    connection) meanwhile leaves it unacked: the broker delivers it again, to be refused
    again. Without an event loop (``scheduler`` unset) the message is acked as before.
    """

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self._store: DeadLetterStore | None = None
        self._lock = threading.Lock()
        #: ``scheduler(delay_s, fn)``: run ``fn`` later on the consumer's loop.
        self.scheduler: Callable[[float, Callable[[], None]], None] | None = None
        #: Called once per message held / released (the consumer's QoS).
        self.on_hold: Callable[[], None] = lambda: None
        self.on_release: Callable[[], None] = lambda: None
        self._held: list[tuple[Any, DeadLetter]] = []
        self._retry_s = 0.0  # 0: no retry scheduled

    def store(self) -> DeadLetterStore:
        with self._lock:
            if self._store is None:
                self._store = DeadLetterStore.from_settings(get_settings())
            return self._store

    @property
    def held(self) -> int:
        return len(self._held)

    def refuse(self, message: Any, refusal: Refusal) -> None:
        delivery = getattr(message, "delivery_info", None) or {}
        queue = str(delivery.get("routing_key") or delivery.get("exchange") or "?")
        headers = getattr(message, "headers", None)
        letter = build_letter(
            queue=queue,
            reason=refusal.reason,
            detail=refusal.detail,
            hostname=self.hostname,
            headers=headers,
            body=getattr(message, "body", None),
            content_type=getattr(message, "content_type", None),
            content_encoding=getattr(message, "content_encoding", None),
        )
        hold = self.scheduler is not None and not getattr(message, "acknowledged", False)
        if self.write(letter, held=hold) or not hold:
            _ack(message)
            return
        self._held.append((message, letter))
        with contextlib.suppress(Exception):
            self.on_hold()
        if not self._retry_s:
            self._schedule(HOLD_RETRY_FIRST_S)

    def _schedule(self, delay_s: float) -> None:
        self._retry_s = delay_s
        assert self.scheduler is not None
        self.scheduler(delay_s, self.retry_held)

    def retry_held(self) -> None:
        """Write the held letters, oldest first, acking each written; on the first failure
        stop and try again later (backoff)."""
        while self._held:
            message, letter = self._held[0]
            try:
                self._put(letter)
            except Exception as exc:
                log.warning(
                    "dead_letter_write_retry_failed", error=type(exc).__name__, held=self.held
                )
                self._schedule(min(HOLD_RETRY_MAX_S, max(HOLD_RETRY_FIRST_S, self._retry_s * 2)))
                return
            self._held.pop(0)
            _ack(message)
            with contextlib.suppress(Exception):
                self.on_release()
            log.warning("dead_letter_written_late", queue=letter.queue, dead_letter_id=letter.id)
        self._retry_s = 0.0

    def _put(self, letter: DeadLetter) -> None:
        dropped = self.store().put(letter)
        if dropped:
            metrics.dead_letters_dropped(dropped)

    def write(self, letter: DeadLetter, *, held: bool = False) -> bool:
        """Store, count and log one letter; ``False`` if the store write failed (the store
        down must not stop the worker)."""
        try:
            self._put(letter)
            stored = True
        except Exception as exc:  # the store down must not stop the worker either
            stored = False
            log.error(
                "dead_letter_write_failed",
                error=type(exc).__name__,
                reason=letter.reason,
                queue=letter.queue,
                held=held,
                headers=letter.headers[:1000],
                body=letter.body[:1000],
            )
        metrics.dead_letter(letter.queue, letter.reason)
        log.warning(
            "message_refused",
            reason=letter.reason,
            detail=letter.detail,
            queue=letter.queue,
            task=letter.task,
            message_id=letter.message_id,
            dead_letter_id=letter.id if stored else None,
        )
        return stored

    def record(self, letter: DeadLetter) -> None:
        """Store, count and log one letter (the Redis transport guard's entry point)."""
        self.write(letter)


def _ack(message: Any) -> None:
    if not getattr(message, "acknowledged", False):
        with contextlib.suppress(Exception):  # a channel gone: the broker redelivers it
            message.ack()


def limits_from_settings() -> Limits:
    settings = get_settings()
    return Limits(
        max_message_bytes=settings.max_message_bytes, max_countdown_s=settings.max_countdown_s
    )


#: Celery's consumer steps, with native delayed delivery replaced by ours (which declares
#: every queue of ours before binding it: ``workers/guard/delayed.py``).
CONSUMER_STEPS: Final = [
    DELAYED_DELIVERY_STEP if step.endswith(":DelayedDelivery") else step
    for step in Consumer.Blueprint.default_steps
]


class GuardedConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer with :func:`inspect_message` in front of every task message."""

    class Blueprint(Consumer.Blueprint):  # type: ignore[misc]
        default_steps = CONSUMER_STEPS

    def _dead_letterer(self) -> DeadLetterer:
        letterer: DeadLetterer | None = getattr(self, "_nbq_dead_letterer", None)
        if letterer is None:
            letterer = DeadLetterer(str(self.hostname))
            letterer.on_hold = lambda: self.qos.increment_eventually()
            letterer.on_release = lambda: self.qos.decrement_eventually()
            self._nbq_dead_letterer = letterer
        return letterer

    def connect(self) -> Any:
        """Hand the dead-letterer to the Redis transport guard before the connection's
        first restore of unacked entries (``on_poll_init``) can need it."""
        redis_transport.use_letterer(self._dead_letterer())
        return super().connect()

    def create_task_handler(self, promise: Any = vine_promise) -> Any:
        inner = super().create_task_handler(promise)
        letterer = self._dead_letterer()
        if self.hub is not None:  # hold a letter the store refused, retry on this loop
            hub = self.hub
            letterer.scheduler = lambda delay_s, fn: hub.call_later(delay_s, fn)
        limits = limits_from_settings()
        connection_errors = tuple(self.connection_errors or ())

        def on_task_received(message: Any) -> Any:
            refusal = inspect_message(
                headers=message.headers,
                body=message.body,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                now=time.time(),
                limits=limits,
            )
            if refusal is not None:
                letterer.refuse(message, refusal)
                return None
            try:
                return inner(message)
            except connection_errors:
                raise
            except Exception as exc:  # defence in depth: Celery must not crash on it
                letterer.refuse(
                    message, Refusal("handler_error", f"{type(exc).__name__}: {exc}"[:300])
                )
                return None

        return on_task_received

    def on_send_event_buffered(self) -> None:
        """A task event joined the buffer: flush it within ``EVENT_FLUSH_DELAY_S``.

        Called from pool threads too, so the timer is set from the hub's own thread
        (``call_soon`` is thread-safe, the timer is not). The mark is cleared before the
        flush: an event buffered during a flush schedules the next one. A mark older than
        a second (its timer dropped with a restarted consumer's hub) no longer counts.
        """
        if not self.hub:
            return
        if not self._nbq_events_on_redis():
            super().on_send_event_buffered()  # Celery's flush on the next loop tick
            return
        now = time.monotonic()
        if now - getattr(self, "_nbq_flush_pending", -10.0) < 1.0:
            return
        self._nbq_flush_pending = now
        self.hub.call_soon(self._nbq_schedule_flush)

    def _nbq_events_on_redis(self) -> bool:
        """Only on the Redis transport: there each flush is one PUBLISH and that is where
        it was measured. On RabbitMQ (py-amqp) a flush from the hub's timer held up the
        delivery of countdown (delayed-delivery) messages in tests/rabbitmq: keep
        Celery's own flush there."""
        known: bool | None = getattr(self, "_nbq_redis_events", None)
        if known is None:
            url = str(self.app.conf.broker_url or "") if getattr(self, "app", None) else ""
            known = url.split(":", 1)[0] in ("redis", "rediss", "sentinel")
            self._nbq_redis_events = known
        return known

    def _nbq_schedule_flush(self) -> None:
        self.hub.call_later(EVENT_FLUSH_DELAY_S, self._nbq_flush_events)

    def _nbq_flush_events(self) -> None:
        self._nbq_flush_pending = -10.0
        self._flush_events()

    def shutdown(self) -> None:
        """Publish the buffered task events before Celery closes the dispatcher (its close
        drops a buffer): the last tasks' ``task-succeeded`` reach Flower after a warm
        shutdown too."""
        with contextlib.suppress(Exception):  # a broker already gone: nothing to send to
            self._flush_events()
        super().shutdown()

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._dead_letterer().refuse(message, Refusal("celery_refused", "unknown message format"))

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._dead_letterer().refuse(message, Refusal("unknown_task", f"{exc!r}"[:300]))

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._dead_letterer().refuse(message, Refusal("celery_refused", f"{exc!r}"[:300]))

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._dead_letterer().refuse(message, Refusal("undecodable", f"{exc!r}"[:300]))
