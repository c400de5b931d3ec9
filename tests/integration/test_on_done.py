"""``on_done``: another Celery app (its own module, none of our imports) gets each job's end."""

from __future__ import annotations

import json
import sys

import pytest

from tests.support.procs import start, stop, wait_until
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]


def test_another_celery_app_receives_one_message_per_job_end(stack: Stack) -> None:
    # Given the other service's worker on its own queue
    env = {**stack.env(), "SHOP_BROKER_URL": stack.redis.url, "ON_DONE_LIST": "shop:done"}
    shop = start(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.integration.on_done_app",
            "worker",
            "-Q",
            "shop",
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
        ],
        env=env,
        log=stack.dir / "shop-worker.log",
    )
    try:
        # When 20 jobs asking for on_done end (18 stored, 2 cancelled before a worker runs)
        producer = stack.producer()
        on_done = {"task": "shop.image_ready", "queue": "shop"}
        jobs = [
            producer.enqueue({"prompt": "x", "quality": "1K"}, job_id=f"od-{n}", on_done=on_done)
            for n in range(20)
        ]
        for job in jobs[18:]:
            job.cancel()
        stack.start_worker()
        client = stack.redis.client()
        wait_until(lambda: client.llen("shop:done") >= 20, timeout_s=90, what="20 on_done")
        # Then one message per job, each carrying the job's public view
        got = [json.loads(raw) for raw in client.lrange("shop:done", 0, -1)]
        assert sorted(g["job_id"] for g in got) == sorted(j.job_id for j in jobs)
        assert sorted(g["event"] for g in got).count("job.stored") == 18
        assert all("on_done_task" not in g and "result_urls" not in g for g in got)
    finally:
        stop(shop, timeout_s=20)
