"""``/healthz`` and ``/readyz``: readiness names the dependency that is down."""

from __future__ import annotations

from collections.abc import Callable

from tests.producers.ingress.conftest import Ingress
from tests.support.procs import free_port


def test_healthz_answers_without_auth(ingress: Ingress) -> None:
    assert ingress.client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_200_when_redis_s3_and_the_broker_answer(ingress: Ingress) -> None:
    response = ingress.client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ok",
        "checks": {"redis": True, "s3": True, "broker": True},
    }


def test_readyz_is_503_naming_s3_when_it_does_not_answer(
    make_ingress: Callable[..., Ingress],
) -> None:
    ingress = make_ingress(s3_endpoint=f"127.0.0.1:{free_port()}")
    response = ingress.client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"redis": True, "s3": False, "broker": True}


def test_readyz_is_503_naming_redis_and_the_broker_when_they_are_down(
    make_ingress: Callable[..., Ingress],
) -> None:
    ingress = make_ingress(broker_url=f"redis://127.0.0.1:{free_port()}/0")
    response = ingress.client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"redis": False, "s3": True, "broker": False}
