"""Record and message in one Redis round trip (kombu's publish batch, Redis broker only).

``Producer.enqueue`` used to pay three round trips: the job record, the ``nbq.generate``
message (LPUSH) and its ``task-sent`` event (PUBLISH). kombu ≥ 5.7 can buffer a
producer's publishes in a non-transactional Redis pipeline (``kombu.Producer.batch``);
the record's create script joins that pipeline, so all three reach Redis in one write.

Order inside the pipeline is message, event, record. A worker can only act on the message
after Redis has answered its BRPOP and the worker has decoded and dispatched it, long after
the two commands behind it ran; and if it ever won, ``nbq.generate`` carries everything
the record holds (request, job id, producer, batch id) and intake creates the same record
(the create script is idempotent). Nothing is lost either way a pipeline can break: a
message without a record is recorded by the worker, a record without a message is
re-driven by the reconciler.

Used only when the job store and the broker are the same Redis (the default); otherwise,
or with an older kombu, enqueue keeps its two-step path (record, then message). On
RabbitMQ (``amqp://``) that is always the path: the record is written to Redis first, then
the message is published with publisher confirms; a broker failure there raises
``EnqueueUncertainError`` with the job id, and the recorded job is re-sent by the
reconciler, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nanobanana_queue.workers.dispatch import Dispatcher
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.store import JobStore
from nanobanana_queue.workers.settings import SENTINEL_SCHEME, Settings
from nanobanana_queue.workers.stages.steps import Generate


def one_trip_possible(settings: Settings) -> bool:
    """Same Redis for job store and broker, a Redis broker, and a kombu that batches."""
    from kombu.messaging import Producer as KombuProducer

    return (
        settings.redis_url in (None, settings.broker_url)
        and settings.broker_url.startswith(("redis://", "rediss://", SENTINEL_SCHEME))
        and hasattr(KombuProducer, "batch")
    )


def send_with_record(
    dispatcher: Dispatcher,
    store: JobStore,
    record: JobRecord,
    step: Generate,
    *,
    also: Sequence[Any] = (),
) -> tuple[JobRecord, bool]:
    """Publish ``nbq.generate`` and create ``record`` in one pipeline.

    Returns ``(stamped record, True)``; ``False`` when the record could not join the
    message's pipeline (the transport published at once, or buffered nothing): the caller
    writes the record and sends again (a duplicate message is harmless). Redis and kombu
    errors propagate: the pipeline may have run in part (``kombu`` says "delivery is
    uncertain"), which ``Producer`` resolves.
    """
    stamped, eval_args = store.create_eval_args(record)
    with dispatcher.app.producer_or_acquire() as producer, producer.batch() as batch:
        dispatcher.send(step, producer=producer)
        session = getattr(batch.state, "session", None)
        pipeline = getattr(session, "pipeline", None)
        if pipeline is None or len(pipeline) == 0:
            # Published at once (no batching), or nothing was buffered (kombu would not
            # flush our create alone): the caller records and sends the two-step way.
            return stamped, False
        pipeline.execute_command(*eval_args)
        for command in store.producer_index_commands(stamped):  # GET /v1/jobs
            pipeline.execute_command(*command)
        if also:
            pipeline.execute_command(*also)  # e.g. the fair-share gate's "enqueued"
        if store.wait_replicas:
            # WAIT must run on the connection that wrote; to read its reply we execute
            # kombu's pipeline here (kombu's own flush then finds it empty).
            pipeline.execute_command("WAIT", store.wait_replicas, store.wait_timeout_ms)
            replies = pipeline.execute()
            store.check_replicas(int(replies[-1]), stamped.job_id)
    return stamped, True
