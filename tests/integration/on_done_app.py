"""Another service's Celery app: it imports nothing of nanobanana-queue.

Its task ``shop.image_ready`` receives a job's end as ``job=`` (the public view) and
keeps it in the Redis list ``ON_DONE_LIST`` for the test to read.
"""

from __future__ import annotations

import json
import os

import redis
from celery import Celery

app = Celery("shop", broker=os.environ["SHOP_BROKER_URL"])
app.conf.task_default_queue = "shop"


@app.task(name="shop.image_ready")
def image_ready(job: dict) -> None:  # type: ignore[type-arg]
    redis.Redis.from_url(os.environ["SHOP_BROKER_URL"]).rpush(
        os.environ["ON_DONE_LIST"], json.dumps(job)
    )
