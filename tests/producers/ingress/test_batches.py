"""``/v1/batches``: one id for many jobs, idempotent, counted by state, per producer."""

from __future__ import annotations

from nanobanana_queue.workers.jobs.state import JobState
from tests.producers.ingress.conftest import Ingress, auth

REQUESTS = [{"prompt": f"image {i}", "quality": "1K"} for i in range(5)]


def test_a_batch_enqueues_every_request_under_one_id(ingress: Ingress) -> None:
    response = ingress.client.post("/v1/batches", json={"requests": REQUESTS}, headers=auth())
    assert response.status_code == 201, response.text
    created = response.json()
    assert len(created["job_ids"]) == 5 and created["refused"] == []
    batch_id = created["batch_id"]
    # Batch and job ids are in alice's id scope (workers/jobs/ids.py)
    assert batch_id.startswith("alice~")
    members = ingress.redis.smembers(f"{ingress.settings.key_prefix}:batch:{batch_id}")
    assert {m.decode() for m in members} == set(created["job_ids"])  # type: ignore[union-attr]
    for job_id in created["job_ids"]:
        record = ingress.store.require(job_id)
        assert job_id.startswith(f"{batch_id}-")
        assert record.batch_id == batch_id and record.producer == "alice"


def test_repeating_a_batch_with_its_id_enqueues_nothing_new(ingress: Ingress) -> None:
    body = {"batch_id": "nightly-1", "requests": REQUESTS}
    first = ingress.client.post("/v1/batches", json=body, headers=auth())
    second = ingress.client.post("/v1/batches", json=body, headers=auth())
    assert first.json()["job_ids"] == second.json()["job_ids"]
    assert ingress.job_count() == 5 and ingress.queued_messages("submit") == 5


def test_the_batch_view_counts_jobs_by_state(ingress: Ingress) -> None:
    created = ingress.client.post(
        "/v1/batches", json={"batch_id": "b1", "requests": REQUESTS}, headers=auth()
    ).json()
    ingress.client.delete(f"/v1/jobs/{created['job_ids'][0]}", headers=auth())
    view = ingress.client.get("/v1/batches/b1", headers=auth())
    assert view.status_code == 200
    data = view.json()
    assert data["total"] == 5 and data["done"] == 1
    assert data["counts"] == {JobState.QUEUED.value: 4, JobState.CANCELLED.value: 1}


def test_bad_requests_are_refused_by_index_and_field_while_the_good_ones_are_enqueued(
    ingress: Ingress,
) -> None:
    bad = [*REQUESTS, {"prompt": "ok", "size": "7:5"}, "not an object", {"prompt": "x" * 3000}]
    response = ingress.client.post(
        "/v1/batches", json={"batch_id": "mixed", "requests": bad}, headers=auth()
    )
    assert response.status_code == 201, response.text
    data = response.json()
    assert data["job_ids"] == [f"alice~mixed-{i}" for i in range(5)]  # scoped per producer
    refused = {r["index"]: r for r in data["refused"]}
    assert sorted(refused) == [5, 6, 7]
    assert {r["code"] for r in refused.values()} == {"invalid_request"}
    assert refused[5]["field"] == "requests.5.size" and refused[5]["job_id"] == "mixed-5"
    assert refused[7]["field"] == "requests.7.prompt"
    assert "x" * 100 not in response.text  # the input is never echoed back
    assert ingress.job_count() == 5
    # And resending the corrected batch enqueues only what was refused
    fixed = [*REQUESTS, {"prompt": "ok", "size": "1:1"}, {"prompt": "ok"}, {"prompt": "short"}]
    again = ingress.client.post(
        "/v1/batches", json={"batch_id": "mixed", "requests": fixed}, headers=auth()
    ).json()
    assert again["refused"] == [] and len(again["job_ids"]) == 8 and ingress.job_count() == 8


def test_a_batch_without_one_valid_request_is_a_422_in_the_error_shape(ingress: Ingress) -> None:
    response = ingress.client.post(
        "/v1/batches", json={"requests": [{"prompt": "ok", "size": "7:5"}]}, headers=auth()
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["field"] == "requests.0.size"
    assert ingress.job_count() == 0


def test_another_producers_batch_is_not_found_and_the_same_id_is_its_own_batch(
    ingress: Ingress,
) -> None:
    ingress.client.post(
        "/v1/batches", json={"batch_id": "b2", "requests": REQUESTS}, headers=auth("alice")
    )
    assert ingress.client.get("/v1/batches/b2", headers=auth("bob")).status_code == 404
    again = ingress.client.post(
        "/v1/batches", json={"batch_id": "b2", "requests": REQUESTS}, headers=auth("bob")
    )
    # Batch (and job) ids are scoped per producer: bob's b2 is a batch of his own
    assert again.status_code == 201 and again.json()["refused"] == []
    assert ingress.job_count() == 10


def test_a_job_id_another_producer_uses_is_simply_this_producers_own(ingress: Ingress) -> None:
    ingress.client.post("/v1/jobs", json={"prompt": "x", "job_id": "taken"}, headers=auth("bob"))
    items = [{"prompt": "a"}, {"prompt": "b", "job_id": "taken"}]
    created = ingress.client.post("/v1/batches", json={"requests": items}, headers=auth()).json()
    assert created["refused"] == [] and created["job_ids"][1] == "alice~taken"
    assert ingress.store.require("alice~taken").request["prompt"] == "b"
    assert ingress.store.require("bob~taken").request["prompt"] == "x"
