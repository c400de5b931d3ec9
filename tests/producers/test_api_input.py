"""The Python API refuses bad input with :class:`InvalidRequestError` naming what is wrong
(issue 31, item 3): never a bare ``ValueError`` from deep inside."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from nanobanana_queue.producers import InvalidRequestError, Producer
from nanobanana_queue.workers.settings import Settings
from tests.support.redis_server import RedisServer


@pytest.fixture
def producer_for(session_redis: RedisServer) -> Iterator[Callable[[], Producer]]:
    made: list[Producer] = []

    def make() -> Producer:
        made.append(Producer(Settings(broker_url=session_redis.url, key_prefix="api-input")))
        return made[-1]

    yield make
    for producer in made:
        producer.celery.close()


def test_a_string_instead_of_a_request_mapping_is_an_invalid_request(
    producer_for: Callable[[], Producer],
) -> None:
    with pytest.raises(InvalidRequestError, match=r"must be a mapping .* not str"):
        producer_for().enqueue("a red fox")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["job_id", "producer", "batch_id"])
def test_an_id_of_the_wrong_type_says_its_type_is_wrong(
    producer_for: Callable[[], Producer], name: str
) -> None:
    with pytest.raises(InvalidRequestError, match=f"{name} must be a string, not int") as caught:
        producer_for().enqueue({"prompt": "a red fox"}, **{name: 123})  # type: ignore[arg-type]
    assert caught.value.field == name
