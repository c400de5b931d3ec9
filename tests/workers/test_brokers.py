"""Broker kinds: which URLs are accepted and the Celery settings each kind gets."""

from __future__ import annotations

from typing import Any

import pytest
from kombu.entity import Queue

from nanobanana_queue.workers.app import celery_config, create_app
from nanobanana_queue.workers.brokers import broker_kind, whole_second_countdown
from nanobanana_queue.workers.contract import DECLARED_QUEUES
from nanobanana_queue.workers.settings import ConfigError, load_settings

AMQP = "amqp://guest:guest@127.0.0.1:5672/nbq"
STORE = "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://h:6379/0", "redis"),
        ("rediss://h:6380/0", "redis"),
        ("unix:///run/redis.sock", "redis"),
        ("amqp://u:p@h:5672/v", "amqp"),
        ("amqps://u:p@h:5671/v", "amqp"),
    ],
)
def test_the_broker_kind_follows_the_url_scheme(url: str, kind: str) -> None:
    assert broker_kind(url) == kind


def test_an_unknown_broker_scheme_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"NBQ_BROKER_URL: .*amqp://"):
        load_settings(broker_url="sqs://queue")


def test_a_rabbitmq_broker_requires_a_redis_job_store_with_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"NBQ_REDIS_URL: .*required when NBQ_BROKER_URL"):
        load_settings(broker_url=AMQP)
    with pytest.raises(ConfigError, match=r"NBQ_REDIS_URL: .*redis://"):
        load_settings(broker_url=AMQP, redis_url=AMQP)
    assert load_settings(broker_url=AMQP, redis_url=STORE).job_store_url == STORE


def _amqp_config() -> dict[str, Any]:
    return celery_config(load_settings(broker_url=AMQP, redis_url=STORE))


def test_on_rabbitmq_every_queue_of_ours_is_a_durable_quorum_queue_on_a_topic_exchange() -> None:
    queues: list[Queue] = _amqp_config()["task_queues"]
    assert [q.name for q in queues] == list(DECLARED_QUEUES)
    assert [q.name for q in queues] == ["submit", "poll", "download", "notify"]
    for queue in queues:
        assert queue.as_dict()["queue_arguments"] == {"x-queue-type": "quorum"}
        assert queue.durable and queue.exchange.type == "topic"
        assert queue.routing_key == queue.name


def test_on_rabbitmq_publishes_are_confirmed_and_countdowns_use_native_delayed_delivery() -> None:
    config = _amqp_config()
    assert config["broker_transport_options"] == {"confirm_publish": True}
    assert config["task_default_queue_type"] == "quorum"
    assert config["broker_native_delayed_delivery_queue_type"] == "quorum"
    assert config["worker_detect_quorum_queues"] is True
    assert "visibility_timeout" not in config["broker_transport_options"]


def test_on_rabbitmq_control_and_event_queues_are_exclusive_and_transient() -> None:
    config = _amqp_config()
    assert config["control_queue_exclusive"] and not config["control_queue_durable"]
    assert config["event_queue_exclusive"] and not config["event_queue_durable"]


def test_on_redis_the_transport_options_are_unchanged() -> None:
    config = celery_config(load_settings(broker_url=STORE, visibility_timeout_s=900))
    assert config["broker_transport_options"]["visibility_timeout"] == 900
    assert [q.queue_arguments for q in config["task_queues"]] == [None] * len(DECLARED_QUEUES)
    assert "task_default_queue_type" not in config
    app = create_app(load_settings(broker_url=STORE, visibility_timeout_s=900))
    assert app.conf.broker_transport_options["visibility_timeout"] == 900  # effective


@pytest.mark.parametrize(
    ("countdown", "sent"),
    [(None, None), (0, None), (-1.0, None), (0.05, 1), (0.5, 1), (1.4, 1), (1.5, 2), (14.6, 15)],
)
def test_countdowns_become_whole_seconds_never_cut_to_nothing(
    countdown: float | None, sent: int | None
) -> None:
    assert whole_second_countdown(countdown) == sent


def test_every_send_on_rabbitmq_carries_a_whole_second_countdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Any] = []
    from celery import Celery

    monkeypatch.setattr(Celery, "send_task", lambda self, name, a, k, c, *m, **o: seen.append(c))
    create_app(load_settings(broker_url=AMQP, redis_url=STORE)).send_task("x", countdown=0.3)
    create_app(load_settings(broker_url=STORE)).send_task("x", countdown=0.3)
    assert seen == [1, 0.3]


def test_autoscale_is_refused_on_rabbitmq_with_what_to_do_instead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nanobanana_queue.workers.cli.run import run_worker
    from nanobanana_queue.workers.settings import get_settings

    monkeypatch.setenv("NBQ_BROKER_URL", AMQP)
    monkeypatch.setenv("NBQ_REDIS_URL", STORE)
    monkeypatch.setenv("NBQ_EVOLINK_API_KEY", "k")
    monkeypatch.setenv("NBQ_S3_ACCESS_KEY", "a")
    monkeypatch.setenv("NBQ_S3_SECRET_KEY", "s")
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"--autoscale.*--concurrency"):
            run_worker(
                queues="poll", concurrency=None, pool="threads", autoscale="8,2",
                hostname=None, loglevel="INFO",
            )  # fmt: skip
    finally:
        get_settings.cache_clear()


def test_flower_gets_the_management_api_through_its_environment_never_argv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from nanobanana_queue.workers.app import app
    from nanobanana_queue.workers.cli import run
    from nanobanana_queue.workers.settings import get_settings

    api = "http://nbq:s3cret-pw@rabbit:15672/api/"
    monkeypatch.setenv("NBQ_BROKER_URL", AMQP)
    monkeypatch.setenv("NBQ_REDIS_URL", STORE)
    monkeypatch.setenv("NBQ_BROKER_API_URL", api)
    monkeypatch.delenv("FLOWER_BROKER_API", raising=False)
    started: list[list[str]] = []
    monkeypatch.setattr(app, "start", lambda argv: started.append(argv))
    monkeypatch.setattr(run, "_protect_flower_metrics", lambda: None)
    get_settings.cache_clear()
    try:
        run.run_flower(port=None, address="127.0.0.1", no_auth=True, max_tasks=None, db=None)
        assert os.environ["FLOWER_BROKER_API"] == api
        assert not any("s3cret-pw" in arg for arg in started[0])
    finally:
        monkeypatch.delenv("FLOWER_BROKER_API", raising=False)
        get_settings.cache_clear()
