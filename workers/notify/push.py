"""A job's end pushed to whoever waits for it: ``PUBLISH <prefix>:jobend:<job id> <state>``.

A worker's store publishes it inside the write that ends the job (``update.lua``'s
``publish`` word, ``JobStore.end_channel_prefix``): only when that write applied, and in
its round trip. ``publish_listener`` sends it as its own command (an end listener).

Waiters (``Producer.wait``, ``AsyncProducer.wait``) subscribe to their job's channel
before they read the record, so an end written in between is either in the record they
read or in a message they receive; a slow re-read stays as a safety net (a publisher
killed between its write and its publish). Classic pub/sub: one Redis, a Sentinel's
master and a Cluster (where a PUBLISH reaches subscribers on every node) alike.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from nanobanana_queue.workers.jobs.record import JobRecord


def job_end_channel(prefix: str, job_id: str) -> str:
    return f"{prefix}:jobend:{job_id}"


def publish_listener(client: redis.Redis, prefix: str) -> Callable[[JobRecord], None]:
    def on_end(record: JobRecord) -> None:
        client.publish(job_end_channel(prefix, record.job_id), record.state.value)

    return on_end
