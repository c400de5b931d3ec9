"""Completion webhooks: a job's end told to its producer, signed, retried, replayable.

When a job reaches ``stored``, ``failed``, ``cancelled`` or ``outcome_unknown``, the one
write that moved it (``JobStore.apply``) calls the end listeners; :mod:`.hook` turns that
into one ``nbq.notify`` message on the ``notify`` queue (never blocking a stage), whose
task (:mod:`workers.tasks.notify`) POSTs the job's public view to the job's
``notify_url``, signed per Standard Webhooks (:mod:`.deliver`), and retries with
exponential backoff and jitter, the same ``webhook-id`` on every try, until
NBQ_NOTIFY_RETRY_PERIOD_S has passed; then the delivery is dead-lettered
(:mod:`.deadletter`, ``nbq notify list|replay``). See docs/webhooks.md.

Modules: ``config`` (secrets and per-producer default URLs), ``urls`` (the SSRF guard),
``events`` (event names, body, webhook id), ``hook`` (the end listener), ``deliver``
(one signed attempt and the backoff), ``deadletter`` (the dead-letter store), ``outbox``
(the reconciler's re-send of ends whose send was lost with its process).

Opt-in ``job.progress`` (NBQ_NOTIFY_PROGRESS): the poll stage calls the store's progress
listeners (``hook.progress_listener``) after the write that changed a job's progress;
best effort, not in the outbox, one ``webhook-id`` per progress step.
"""
