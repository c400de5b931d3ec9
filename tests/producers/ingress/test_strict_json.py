"""``NaN`` / ``Infinity`` in a JSON body: a 400 in the normal error shape, never a 500."""

from __future__ import annotations

import pytest

from tests.producers.ingress.conftest import Ingress, auth

RAW = [
    '{"prompt": NaN}',
    '{"prompt": "x", "size": Infinity}',
    '{"prompt": "x", "model_params": {"thinking_level": -Infinity}}',
    '{"prompt": "x", "job_id": NaN}',
]


@pytest.mark.parametrize("raw", RAW)
@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/batches"])
def test_non_standard_json_numbers_are_a_400_in_the_error_shape(
    ingress: Ingress, raw: str, path: str
) -> None:
    body = raw if path == "/v1/jobs" else '{"requests": [' + raw + "]}"
    response = ingress.client.post(
        path, content=body, headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_json" and "JSON number" in error["message"]
    assert ingress.job_count() == 0


def test_the_word_nan_inside_a_string_is_just_text(ingress: Ingress) -> None:
    response = ingress.client.post("/v1/jobs", json={"prompt": "NaN and Infinity"}, headers=auth())
    assert response.status_code == 201
