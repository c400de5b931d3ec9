"""A body the ingress cannot read says so in words: 400 ``invalid_json`` for anything that
is not a UTF-8 JSON document sent as JSON, 422 ``invalid_request`` for JSON that breaks a
rule; no byte offsets posing as fields, no pydantic prefixes (issue 31, item 9)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.producers.ingress.conftest import Ingress, auth


def _post(
    ingress: Ingress, body: bytes, content_type: str | None = "application/json"
) -> dict[str, Any]:
    headers = auth() | ({"Content-Type": content_type} if content_type else {})
    response = ingress.client.post("/v1/jobs", content=body, headers=headers)
    return {"status": response.status_code, **response.json()["error"]}


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"not json", "not valid JSON"),
        (b'{"prompt": "a fox"', "not valid JSON"),
        (b'{"prompt": "\xff\xfe"}', "not UTF-8"),
    ],
)
def test_a_body_that_is_not_json_is_a_400_in_words(
    ingress: Ingress, body: bytes, said: str
) -> None:
    error = _post(ingress, body)
    assert error["status"] == 400 and error["code"] == "invalid_json", error
    assert said in error["message"] and "field" not in error
    assert ingress.job_count() == 0


def test_json_without_a_json_content_type_says_which_header_to_send(ingress: Ingress) -> None:
    error = _post(ingress, b'{"prompt": "a fox"}', content_type=None)
    assert error["status"] == 400 and error["code"] == "invalid_json", error
    assert "Content-Type: application/json" in error["message"]


def test_a_rule_broken_says_the_rule_without_pydantics_prefix(ingress: Ingress) -> None:
    response = ingress.client.post(
        "/v1/jobs", json={"prompt": "a fox", "job_id": "../x"}, headers=auth()
    )
    assert response.status_code == 422
    assert "Value error" not in response.json()["error"]["message"]
