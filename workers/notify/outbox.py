"""The notify outbox: a job's end is told at least once, even across a crash.

The write that moves a job into an end state (``update.lua``) also adds
``<job_id>|<end time>`` to its shard's outbox (a sorted set, ``JobStore.outbox_key``) when
the end is told (a notify_url, an ``on_done`` task, or a producer's default URL). The
process that made the write calls the store's ``outbox_listeners`` (``nbq.notify``,
``on_done``) and then removes the entry. A process killed in between, or a send that
raised, leaves the entry; the reconciler's pass (:func:`redeliver`) calls the listeners
again for entries older than NBQ_STUCK_AFTER_S, with the record as the end left it: the
same ``webhook-id`` (it hashes the end time), so a receiver de-duplicates the rare repeat.
"""

from __future__ import annotations

from nanobanana_queue.workers.jobs.store import END_STATES, JobStore
from nanobanana_queue.workers.logs import get_logger

log = get_logger("nbq.notify")


def redeliver(store: JobStore, *, before: float, limit: int = 500) -> list[str]:
    """Tell again the ends still in the outbox since before ``before``; the job ids told.

    Nothing is done (entries wait) in a process that has no outbox listeners installed.
    An entry whose job has expired, or has moved on since that end (``nbq retry``; its
    next end is told by its own write), is dropped.
    """
    if not store.outbox_listeners:
        return []
    told: list[str] = []
    for job_id, at in store.outbox_due(before=before, limit=limit):
        record = store.get(job_id)
        if record is None or record.state not in END_STATES:
            store.outbox_done(job_id, at)
            continue
        if repr(record.state_times.get(record.state.value)) != at:
            log.warning("notify_outbox_end_superseded", job_id=job_id)
            store.outbox_done(job_id, at)
            continue
        ended = record.model_copy(update={"updated_at": float(at)})  # the end's webhook-id
        if store.call_listeners(store.outbox_listeners, ended):
            store.outbox_done(job_id, at)
            told.append(job_id)
            log.warning("notify_redelivered", job_id=job_id, state=record.state.value)
    return told
