"""``priority`` on ``POST /v1/jobs``: recorded on the job and carried by its message; only
``high | normal | low`` are accepted."""

from __future__ import annotations

from tests.producers.ingress.conftest import Ingress, auth

BODY = {"prompt": "a lighthouse at dawn", "size": "16:9", "quality": "1K"}


def test_a_jobs_priority_is_recorded_and_kept_out_of_the_api_request(ingress: Ingress) -> None:
    response = ingress.client.post(
        "/v1/jobs", json={**BODY, "job_id": "p-1", "priority": "high"}, headers=auth()
    )
    assert response.status_code == 201, response.text
    record = ingress.store.require("alice~p-1")
    assert record.priority == "high" and "priority" not in record.request
    plain = ingress.client.post("/v1/jobs", json={**BODY, "job_id": "p-2"}, headers=auth())
    assert plain.status_code == 201 and ingress.store.require("alice~p-2").priority == "normal"


def test_an_unknown_priority_is_refused(ingress: Ingress) -> None:
    response = ingress.client.post("/v1/jobs", json={**BODY, "priority": "urgent"}, headers=auth())
    assert response.status_code == 422 and "priority" in response.text
    assert ingress.job_count() == 0
