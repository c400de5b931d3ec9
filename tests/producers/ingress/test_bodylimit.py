"""Bodies over NBQ_MAX_BODY_BYTES: refused with 413 by header or while streaming."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from tests.producers.ingress.conftest import Ingress, auth

LIMIT = 2048


def _big_body(size: int) -> bytes:
    return b'{"prompt": "' + b"x" * size + b'"}'


def test_a_declared_length_over_the_limit_answers_413(
    make_ingress: Callable[..., Ingress],
) -> None:
    ingress = make_ingress(max_body_bytes=LIMIT)
    response = ingress.client.post(
        "/v1/jobs", content=_big_body(LIMIT), headers={**auth(), "content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert ingress.job_count() == 0


def test_a_streamed_body_without_length_is_cut_at_the_limit(
    make_ingress: Callable[..., Ingress],
) -> None:
    ingress = make_ingress(max_body_bytes=LIMIT)

    def chunks() -> Iterator[bytes]:
        body = _big_body(LIMIT * 4)
        for start in range(0, len(body), 512):
            yield body[start : start + 512]

    response = ingress.client.post(
        "/v1/jobs", content=chunks(), headers={**auth(), "content-type": "application/json"}
    )
    assert response.status_code == 413
    assert ingress.job_count() == 0


def test_a_body_at_the_limit_is_accepted(make_ingress: Callable[..., Ingress]) -> None:
    ingress = make_ingress(max_body_bytes=LIMIT)
    body = b'{"prompt": "' + b"y" * 1900 + b'"}'
    assert len(body) <= LIMIT
    response = ingress.client.post(
        "/v1/jobs", content=body, headers={**auth(), "content-type": "application/json"}
    )
    assert response.status_code == 201


def test_callbacks_are_held_to_the_same_limit(make_ingress: Callable[..., Ingress]) -> None:
    ingress = make_ingress(max_body_bytes=LIMIT)
    response = ingress.client.post("/v1/callbacks/evolink/j1?token=x", content=_big_body(LIMIT))
    assert response.status_code == 413
