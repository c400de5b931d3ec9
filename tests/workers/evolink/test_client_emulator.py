"""EvolinkClient over real HTTP against the project's emulator (time scale 0.01)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from nanobanana_queue.workers.errors import NotFoundError, QuotaExceededError, UnauthorizedError
from nanobanana_queue.workers.evolink.client import EvolinkClient
from nanobanana_queue.workers.evolink.models import (
    GenerationRequest,
    Quality,
    Size,
    Task,
    TaskStatus,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_metrics")]

#: Hang guard only: at time scale 0.01 a task finishes in well under a second.
POLL_DEADLINE_S = 60.0


@pytest.fixture
def client(emulator_server: Any) -> Iterator[EvolinkClient]:
    with EvolinkClient(emulator_server.url, emulator_server.api_key) as api:
        yield api


def wait_until_final(client: EvolinkClient, task_id: str) -> Task:
    deadline = time.monotonic() + POLL_DEADLINE_S
    while True:
        task = client.get_task(task_id)
        if task.status.is_final or time.monotonic() > deadline:
            return task
        time.sleep(0.05)


@pytest.mark.parametrize(("size", "ratio"), [(Size.R16_9, 16 / 9), (Size.R9_16, 9 / 16)])
def test_created_task_completes_with_an_image_of_the_requested_ratio(
    client: EvolinkClient, size: Size, ratio: float
) -> None:
    # Given a submitted request
    created = client.create_task(
        GenerationRequest(prompt="a banana on a beach", size=size, quality=Quality.Q1K),
        idempotency_key=f"test-{size.value}",
    )
    assert created.id
    assert created.status in (TaskStatus.PENDING, TaskStatus.PROCESSING)

    # When we poll until it is final
    task = wait_until_final(client, created.id)

    # Then it completed and its link serves an image with the requested aspect ratio
    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.progress == 100
    assert len(task.result_urls) >= 1
    response = httpx.get(task.result_urls[0], timeout=10)
    assert response.status_code == 200
    with Image.open(io.BytesIO(response.content)) as image:
        image.load()
        width, height = image.size
    assert width / height == pytest.approx(ratio, rel=0.02)


def test_query_of_a_fresh_task_returns_the_same_id(client: EvolinkClient) -> None:
    created = client.create_task(GenerationRequest(prompt="a cat"))

    queried = client.get_task(created.id)

    assert queried.id == created.id


def test_wrong_api_key_raises_unauthorized(emulator_server: Any) -> None:
    client = EvolinkClient(emulator_server.url, "not-the-key")

    with client, pytest.raises(UnauthorizedError) as caught:
        client.create_task(GenerationRequest(prompt="a cat"))

    assert caught.value.status_code == 401
    assert "not-the-key" not in str(caught.value)


def test_no_credits_left_raises_quota_exceeded(emulator_server: Any, client: EvolinkClient) -> None:
    emulator_server.set_credits(0)

    with pytest.raises(QuotaExceededError) as caught:
        client.create_task(GenerationRequest(prompt="a cat"))

    assert caught.value.status_code == 402
    assert caught.value.code


def test_unknown_task_id_raises_not_found(client: EvolinkClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.get_task("task-unified-0-doesnotexist")

    assert caught.value.status_code == 404
