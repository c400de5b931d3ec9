"""``/v1/jobs`` on a real Redis: create, idempotency, validation, reads, images, cancel."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
import pytest

from nanobanana_queue.workers.jobs.record import JobRecord, StoredObject
from nanobanana_queue.workers.jobs.state import JobState
from tests.producers.ingress.conftest import Ingress, auth
from tests.support.records import seed
from tests.support.s3_server import S3Server

BODY = {"prompt": "a lighthouse at dawn", "size": "16:9", "quality": "1K"}


def test_a_valid_request_is_enqueued_and_answers_201_with_the_job(ingress: Ingress) -> None:
    response = ingress.client.post("/v1/jobs", json=BODY, headers=auth())
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["state"] == "queued" and job["producer"] == "alice"
    assert job["request"]["prompt"] == BODY["prompt"]
    assert response.headers["location"] == f"/v1/jobs/{job['job_id']}"
    assert "poll_token" not in job and "result_urls" not in job
    assert ingress.queued_messages("submit") == 1


def test_the_same_job_id_twice_returns_the_same_job_once(ingress: Ingress) -> None:
    first = ingress.client.post("/v1/jobs", json={**BODY, "job_id": "order-1"}, headers=auth())
    second = ingress.client.post("/v1/jobs", json={**BODY, "job_id": "order-1"}, headers=auth())
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["job_id"] == second.json()["job_id"] == "alice~order-1"  # alice's scope
    assert ingress.job_count() == 1


def test_a_different_request_under_a_used_id_answers_409_and_reveals_nothing(
    ingress: Ingress,
) -> None:
    first = ingress.client.post("/v1/jobs", json={**BODY, "job_id": "fox-1"}, headers=auth())
    other = {**BODY, "prompt": "a blue fox", "job_id": "fox-1"}
    conflict = ingress.client.post("/v1/jobs", json=other, headers=auth())
    assert (first.status_code, conflict.status_code) == (201, 409)
    error = conflict.json()["error"]
    assert error["code"] == "job_id_conflict" and "fox-1" in error["message"]
    assert BODY["prompt"] not in conflict.text  # nothing about the job already there
    assert ingress.store.require("alice~fox-1").request["prompt"] == BODY["prompt"]
    # bob's fox-1 is his own new job: ids are per producer
    assert ingress.client.post("/v1/jobs", json=other, headers=auth("bob")).status_code == 201
    assert ingress.job_count() == 2


def test_the_idempotency_key_header_names_the_job(ingress: Ingress) -> None:
    headers = {**auth(), "Idempotency-Key": "key-77"}
    first = ingress.client.post("/v1/jobs", json=BODY, headers=headers)
    second = ingress.client.post("/v1/jobs", json=BODY, headers=headers)
    assert first.json()["job_id"] == second.json()["job_id"] == "alice~key-77"
    assert second.status_code == 200 and ingress.job_count() == 1


def test_a_header_and_body_id_that_differ_are_refused(ingress: Ingress) -> None:
    response = ingress.client.post(
        "/v1/jobs", json={**BODY, "job_id": "a-1"}, headers={**auth(), "Idempotency-Key": "b-2"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "header.Idempotency-Key"
    assert ingress.job_count() == 0


def test_job_ids_are_scoped_per_producer_so_the_same_id_is_two_jobs_and_reveals_nothing(
    ingress: Ingress,
) -> None:
    # Given alice's job "shared"
    first = ingress.client.post(
        "/v1/jobs", json={**BODY, "job_id": "shared"}, headers=auth("alice")
    )
    # When bob creates a job with the same id
    response = ingress.client.post(
        "/v1/jobs", json={**BODY, "prompt": "bob's own", "job_id": "shared"}, headers=auth("bob")
    )
    # Then bob gets a new job of his own (201, exactly as if the id had been free)
    assert first.status_code == response.status_code == 201
    assert response.json()["job_id"] == "bob~shared" and response.json()["producer"] == "bob"
    assert "alice" not in response.text and "lighthouse" not in response.text
    assert response.headers["Location"] == "/v1/jobs/bob~shared"
    assert first.json()["job_id"] == "alice~shared"
    # And each reads back its own job, by its id or by its stored id
    assert ingress.client.get("/v1/jobs/bob~shared", headers=auth("bob")).status_code == 200
    mine = ingress.client.get("/v1/jobs/shared", headers=auth("alice")).json()
    assert mine["producer"] == "alice"
    assert ingress.job_count() == 2
    # And an id naming another producer's scope is refused like any invalid id
    sneaky = ingress.client.get("/v1/jobs/alice~shared", headers=auth("bob"))
    assert sneaky.status_code == 404 and "lighthouse" not in sneaky.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # A few of the model's rules (all of them: tests/workers/evolink/test_models.py)
        ({"prompt": ""}, "prompt"),
        ({"prompt": "ok", "quality": "8K"}, "quality"),
        ({"prompt": "ok", "model_params": {"thinking_level": "max"}}, "model_params"),
        ({"prompt": "ok", "colour": "blue"}, "colour"),
        ({"size": "1:1"}, "prompt"),
        # and the ingress's own field
        ({"prompt": "ok", "job_id": "../etc"}, "job_id"),
    ],
)
def test_bad_requests_answer_422_naming_the_field_and_enqueue_nothing(
    ingress: Ingress, body: dict[str, object], field: str
) -> None:
    response = ingress.client.post("/v1/jobs", json=body, headers=auth())
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["field"].split(".")[0] == field, error
    assert error["message"].startswith(error["field"]), error
    assert ingress.job_count() == 0 and ingress.queued_messages("submit") == 0


def test_a_422_never_echoes_more_than_a_short_excerpt_of_the_input(ingress: Ingress) -> None:
    prompt = "lighthouse " * 300  # 3,300 characters
    response = ingress.client.post("/v1/jobs", json={"prompt": prompt}, headers=auth())
    assert response.status_code == 422
    assert set(response.json()) == {"error"}
    assert response.json()["error"]["field"] == "prompt"
    assert len(response.text) < 600 and "lighthouse lighthouse" not in response.text


def test_a_body_that_is_not_json_answers_400_invalid_json(ingress: Ingress) -> None:
    response = ingress.client.post(
        "/v1/jobs", content=b"{not json", headers={**auth(), "content-type": "application/json"}
    )
    assert response.status_code == 400 and ingress.job_count() == 0
    assert response.json()["error"]["code"] == "invalid_json"


def test_a_job_reads_back_with_its_state_and_error(ingress: Ingress) -> None:
    ingress.store.create(
        JobRecord(
            job_id="alice~j-failed",
            state=JobState.FAILED,
            producer="alice",
            poll_token="secret-token",
            error={"code": "content_policy_violation", "message": "no"},
        )
    )
    response = ingress.client.get("/v1/jobs/j-failed", headers=auth())
    assert response.status_code == 200
    job = response.json()
    assert job["state"] == "failed" and job["error"]["code"] == "content_policy_violation"
    assert "secret-token" not in response.text


@pytest.mark.parametrize("job_id", ["nope", "..", "a" * 300])
def test_an_unknown_job_answers_404(ingress: Ingress, job_id: str) -> None:
    assert ingress.client.get(f"/v1/jobs/{job_id}", headers=auth()).status_code == 404


def test_another_producers_job_answers_404_on_every_route(ingress: Ingress) -> None:
    ingress.client.post("/v1/jobs", json={**BODY, "job_id": "mine"}, headers=auth("alice"))
    for method, path in [
        ("GET", "/v1/jobs/mine"),
        ("GET", "/v1/jobs/mine/images"),
        ("DELETE", "/v1/jobs/mine"),
    ]:
        assert ingress.client.request(method, path, headers=auth("bob")).status_code == 404
    assert ingress.store.require("alice~mine").state is JobState.QUEUED


def test_images_of_a_job_not_yet_stored_answer_409(ingress: Ingress) -> None:
    ingress.client.post("/v1/jobs", json={**BODY, "job_id": "early"}, headers=auth())
    response = ingress.client.get("/v1/jobs/early/images", headers=auth())
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_stored"


def test_images_of_a_stored_job_are_presigned_links_that_work(
    ingress: Ingress, session_s3: S3Server
) -> None:
    # Given a stored job whose image is in S3
    key = f"{ingress.settings.key_prefix}/img.png"
    session_s3.minio().put_object(session_s3.bucket, key, io.BytesIO(b"png-bytes"), 9)
    seed(
        ingress.store,
        JobRecord(
            job_id="alice~done",
            state=JobState.STORED,
            producer="alice",
            objects=[StoredObject(key=key, sha256="ab", size=9, content_type="image/png")],
        ),
    )
    # When its images are asked for
    response = ingress.client.get("/v1/jobs/done/images", headers=auth())
    # Then each comes with a presigned URL that fetches the bytes
    assert response.status_code == 200
    images = response.json()["images"]
    assert [i["key"] for i in images] == [key]
    assert httpx.get(images[0]["url"], trust_env=False).content == b"png-bytes"


def test_cancelling_a_queued_job_answers_200_with_the_cancelled_record(ingress: Ingress) -> None:
    ingress.client.post("/v1/jobs", json={**BODY, "job_id": "c-1"}, headers=auth())
    response = ingress.client.delete("/v1/jobs/c-1", headers=auth())
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    again = ingress.client.delete("/v1/jobs/c-1", headers=auth())
    assert again.status_code == 200 and again.json()["state"] == "cancelled"


def test_cancelling_a_stored_job_answers_409_and_changes_nothing(ingress: Ingress) -> None:
    seed(ingress.store, JobRecord(job_id="alice~kept", state=JobState.STORED, producer="alice"))
    response = ingress.client.delete("/v1/jobs/kept", headers=auth())
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_cancellable"
    assert "stored" in response.json()["error"]["message"]
    assert ingress.store.require("alice~kept").state is JobState.STORED


def test_a_daily_credit_budget_refusal_answers_429(make_ingress: Callable[..., Ingress]) -> None:
    ingress = make_ingress(credit_limit_daily=0.5)
    response = ingress.client.post("/v1/jobs", json=BODY, headers=auth())
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "credit_budget_exceeded"
    assert "NBQ_CREDIT_LIMIT_DAILY" in response.json()["error"]["message"]
    assert "paid today" not in response.text  # the shared budget's figures are everyone's
    assert ingress.job_count() == 0
