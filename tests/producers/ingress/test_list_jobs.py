"""``GET /v1/jobs`` and ``notify_url`` on ``POST /v1/jobs``, on a real Redis."""

from __future__ import annotations

from collections.abc import Callable

from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from tests.producers.ingress.conftest import Ingress, auth

BODY = {"prompt": "a lighthouse at dawn", "quality": "1K"}
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _seed(ingress: Ingress, producer: str, n: int, **fields: object) -> list[str]:
    ids = [f"{producer}~seed-{i:05d}" for i in range(n)]
    for job_id in ids:
        ingress.store.create(JobRecord(job_id=job_id, producer=producer, **fields))
    return ids


def _pages(ingress: Ingress, query: str, between: Callable[[], object] = lambda: None) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        url = f"/v1/jobs?{query}" + (f"&cursor={cursor}" if cursor else "")
        response = ingress.client.get(url, headers=auth())
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [job["job_id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        between()


def test_pages_cover_every_job_once_while_new_jobs_arrive_and_never_anothers(
    ingress: Ingress,
) -> None:
    # Given 2,500 of alice's jobs and some of bob's
    alices = _seed(ingress, "alice", 2500)
    _seed(ingress, "bob", 50)
    # When alice pages through hers, 300 at a time, enqueuing a job between pages
    new: list[str] = []

    def enqueue() -> None:
        response = ingress.client.post("/v1/jobs", json=BODY, headers=auth())
        new.append(response.json()["job_id"])

    seen = _pages(ingress, "limit=300", between=enqueue)
    # Then every job listed once, newest first, none of bob's, none missing
    assert len(seen) == len(set(seen))
    assert set(seen) == set(alices)
    assert seen == sorted(alices, reverse=True)  # created in id order: newest first
    assert len(new) == 8


def test_the_state_and_batch_filters_apply_to_the_callers_jobs_only(ingress: Ingress) -> None:
    _seed(ingress, "alice", 5)
    ingress.client.post(
        "/v1/batches", json={"batch_id": "b1", "requests": [BODY, BODY]}, headers=auth()
    )
    batch = _pages(ingress, "batch_id=b1")
    assert sorted(batch) == ["alice~b1-0", "alice~b1-1"]
    assert len(_pages(ingress, "state=queued&limit=2")) == 7
    assert _pages(ingress, "state=stored") == []
    bob = ingress.client.get("/v1/jobs?batch_id=b1", headers=auth("bob")).json()
    assert bob == {"jobs": [], "next_cursor": None}


def test_a_bad_cursor_or_a_page_over_1000_is_refused(ingress: Ingress) -> None:
    assert ingress.client.get("/v1/jobs?cursor=nope", headers=auth()).status_code == 422
    assert ingress.client.get("/v1/jobs?limit=1001", headers=auth()).status_code == 422


def test_notify_url_is_refused_for_a_producer_without_a_webhook_secret(
    make_ingress: Callable[..., Ingress],
) -> None:
    ingress = make_ingress(notify_secrets=f"bob:{SECRET}")
    body = {**BODY, "notify_url": "https://hooks.example.com/done"}
    refused = ingress.client.post("/v1/jobs", json=body, headers=auth())
    assert refused.status_code == 422 and "no webhook secret" in refused.text
    accepted = ingress.client.post("/v1/jobs", json=body, headers=auth("bob"))
    assert accepted.status_code == 201, accepted.text
    record = ingress.store.get(accepted.json()["job_id"])
    assert record is not None and record.notify_url == body["notify_url"]
    assert "notify_url" not in record.request


def test_an_own_callback_url_is_refused_while_the_project_receives_callbacks(
    ingress: Ingress,
) -> None:
    body = {**BODY, "callback_url": "https://mine.example.com/cb"}
    response = ingress.client.post("/v1/jobs", json=body, headers=auth())
    assert response.status_code == 422 and "use notify_url" in response.text
    assert ingress.store.count_in_state(JobState.QUEUED) == 0
