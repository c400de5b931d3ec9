"""End to end on real parts: producers → submit → countdown polls → download into S3."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import pytest
from PIL import Image

from nanobanana_queue.producers import InvalidRequestError
from nanobanana_queue.workers.jobs.state import JobState
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]

SIZES = ["1:1", "16:9", "9:16", "4:3", "21:9"]


def _ratio(size: str) -> float:
    w, h = (1, 1) if size == "auto" else map(int, size.split(":"))
    return w / h


def test_twenty_jobs_through_the_python_api_reach_stored_with_intact_images(stack: Stack) -> None:
    # Given a worker for every queue
    stack.start_worker()
    producer = stack.producer()
    # When 20 jobs of varied sizes are enqueued
    jobs = {
        producer.enqueue(
            {"prompt": f"test image {i}", "size": SIZES[i % len(SIZES)], "quality": "1K"}
        ).job_id: SIZES[i % len(SIZES)]
        for i in range(20)
    }
    records = stack.wait_all(producer, list(jobs))
    # Then every job is stored, with images of the requested ratio matching the manifest
    assert {r.state for r in records.values()} == {JobState.STORED}, {
        k: (r.state, r.error) for k, r in records.items() if r.state is not JobState.STORED
    }
    client = stack.s3.minio()
    for job_id, size in jobs.items():
        record = records[job_id]
        manifest = json.loads(
            client.get_object(stack.s3.bucket, f"images/{job_id}/manifest.json").read()
        )
        by_key = {o["key"]: o for o in manifest["objects"]}
        assert record.objects and len(by_key) == len(record.objects)
        for obj in record.objects:
            data = client.get_object(stack.s3.bucket, obj.key).read()
            assert hashlib.sha256(data).hexdigest() == obj.sha256 == by_key[obj.key]["sha256"]
            image = Image.open(io.BytesIO(data))
            assert image.width / image.height == pytest.approx(_ratio(size), rel=0.03)
        assert record.polls >= 1 and record.evolink_task_id
    # And each job created exactly one API task
    stats = stack.emulator.stats()
    assert stats["creates_accepted"] == 20


def test_the_same_job_id_enqueued_twice_creates_one_api_task(stack: Stack) -> None:
    stack.start_worker()
    producer = stack.producer()
    first = producer.enqueue({"prompt": "only once", "quality": "1K"}, job_id="order-42")
    second = producer.enqueue({"prompt": "only once", "quality": "1K"}, job_id="order-42")
    assert first.job_id == second.job_id == "order-42"
    record = first.wait(60)
    third = producer.enqueue({"prompt": "only once", "quality": "1K"}, job_id="order-42")
    assert record.state is JobState.STORED and third.status().state is JobState.STORED
    assert stack.emulator.stats()["creates_accepted"] == 1


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        # A few of the model's rules: all of them are tests/workers/evolink/test_models.py,
        # arbitrary input through Producer.enqueue tests/producers/test_fuzz.py
        ({"prompt": ""}, "prompt"),
        ({"prompt": "ok", "quality": "8K"}, "quality"),
        ({"prompt": "ok", "colour": "blue"}, "colour"),
    ],
)
def test_bad_requests_are_refused_and_nothing_is_enqueued(
    stack: Stack, request_body: dict[str, Any], field: str
) -> None:
    producer = stack.producer()
    with pytest.raises(InvalidRequestError) as info:
        producer.enqueue(request_body)
    assert field in str(info.value)
    assert stack.redis.client().keys("nbq:job:*") == []
    assert stack.redis.client().llen("submit") == 0
