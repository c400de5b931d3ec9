"""Property: whatever JSON arrives, the answer is 201/200 with a job or 422 with nothing
enqueued; never a 5xx."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.producers.ingress.conftest import Ingress, auth

FIELDS = [
    "prompt",
    "size",
    "quality",
    "image_urls",
    "model_params",
    "callback_url",
    "job_id",
    "model",
    "extra",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["1:1", "16:9", "4K", "1K", "auto", "high"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
    st.fixed_dictionaries(
        {"prompt": st.text(min_size=1, max_size=60)},
        optional={"size": json_values, "quality": json_values},
    ),
    json_values,
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bodies)
def test_any_body_is_a_job_or_a_422_with_nothing_enqueued(ingress: Ingress, body: Any) -> None:
    before = ingress.job_count()
    response = ingress.client.post("/v1/jobs", json=body, headers=auth())
    assert response.status_code in (200, 201, 422), response.text
    if response.status_code == 422:
        assert ingress.job_count() == before
        error = response.json()["error"]
        assert error["code"] == "invalid_request" and error["field"] and error["message"]
    else:
        assert response.json()["state"] == "queued"
