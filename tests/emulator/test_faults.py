"""Fault rules of the control API, in process (each action, matching, counting)."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from nanobanana_queue.emulator.dropping import ConnectionDroppedError
from tests.emulator.conftest import AUTH, CREATE, body


def _fault(client, **rule):
    response = client.post("/_emulator/faults", json=rule)
    assert response.status_code == 201, response.text
    return response.json()


def _completed_url(client, clock):
    task_id = client.post(CREATE, json=body(), headers=AUTH).json()["id"]
    clock.advance(1000)
    return client.get(f"/v1/tasks/{task_id}", headers=AUTH).json()["results"][0], task_id


@pytest.mark.parametrize(("status", "kind"), [
    (402, "insufficient_quota_error"), (429, "rate_limit_error"),
    (500, "internal_server_error"), (502, "upstream_error"), (503, "service_unavailable"),
])  # fmt: skip
def test_status_fault_answers_that_status_in_the_error_shape(
    make_client, schema_validator, status, kind
):
    client = make_client()
    _fault(client, endpoint="create", action="status", status=status, count=1)

    failed = client.post(CREATE, json=body(), headers=AUTH)
    after = client.post(CREATE, json=body(), headers=AUTH)

    assert failed.status_code == status
    schema_validator("ErrorResponse", failed.json())
    assert failed.json()["error"]["type"] == kind
    assert after.status_code == 200
    stats = client.get("/_emulator/stats").json()
    assert stats["creates_accepted"] == 1  # the faulted request created nothing
    assert stats["creates_rejected"] == {str(status): 1}


def test_429_fault_carries_scaled_retry_after_and_fallback_suggestion(make_client):
    client = make_client(time_scale=0.01)
    _fault(client, endpoint="query", action="status", status=429, retry_after=60)

    response = client.get("/v1/tasks/task-unified-1-abcdefgh", headers=AUTH)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "0.6"
    assert response.json()["error"]["fallback_suggestion"] == "retry after 60 seconds"


def test_402_fault_with_a_daily_quota_code(make_client):
    client = make_client()
    _fault(
        client, endpoint="create", action="status", status=402, code="token_daily_quota_exceeded"
    )
    error = client.post(CREATE, json=body(), headers=AUTH).json()["error"]
    assert error["code"] == "token_daily_quota_exceeded"


def test_fail_task_makes_the_task_end_failed_with_the_code(make_client, clock, schema_validator):
    client = make_client(fixed_duration=5)
    _fault(client, endpoint="create", action="fail_task", code="content_policy_violation", count=1)

    failing = client.post(CREATE, json=body(), headers=AUTH).json()["id"]
    fine = client.post(CREATE, json=body(), headers=AUTH).json()["id"]
    clock.advance(5)

    task = client.get(f"/v1/tasks/{failing}", headers=AUTH).json()
    schema_validator("ImageGenerationResponse", task)
    assert task["status"] == "failed"
    assert task["error"]["code"] == "content_policy_violation"
    assert "results" not in task
    assert client.get(f"/v1/tasks/{fine}", headers=AUTH).json()["status"] == "completed"


def test_match_limits_a_rule_to_prompts_containing_it(make_client):
    client = make_client()
    _fault(client, endpoint="create", action="status", status=500, match="BOOM")
    assert client.post(CREATE, json=body(prompt="calm"), headers=AUTH).status_code == 200
    assert client.post(CREATE, json=body(prompt="a BOOM here"), headers=AUTH).status_code == 500


def test_task_id_limits_a_rule_to_that_task(make_client):
    client = make_client()
    first = client.post(CREATE, json=body(), headers=AUTH).json()["id"]
    second = client.post(CREATE, json=body(), headers=AUTH).json()["id"]
    _fault(client, endpoint="query", action="status", status=503, task_id=first)
    assert client.get(f"/v1/tasks/{first}", headers=AUTH).status_code == 503
    assert client.get(f"/v1/tasks/{second}", headers=AUTH).status_code == 200


@pytest.mark.parametrize(("probability", "expected"), [(0.0, 0), (1.0, 20)])
def test_probability_zero_never_fires_and_one_always_fires(make_client, probability, expected):
    client = make_client()
    _fault(client, endpoint="create", action="status", status=500, probability=probability)
    codes = [client.post(CREATE, json=body(), headers=AUTH).status_code for _ in range(20)]
    assert codes.count(500) == expected


def test_probability_half_fires_about_half_the_time(make_client):
    client = make_client()
    _fault(client, endpoint="create", action="status", status=500, probability=0.5)
    codes = [client.post(CREATE, json=body(), headers=AUTH).status_code for _ in range(200)]
    assert 60 < codes.count(500) < 140


def test_malformed_json_on_create_still_creates_and_charges(make_client):
    client = make_client(credits=10)
    _fault(client, endpoint="create", action="malformed_json", count=1)

    response = client.post(CREATE, json=body(), headers=AUTH)

    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)
    stats = client.get("/_emulator/stats").json()
    assert (stats["creates_accepted"], stats["credits"]) == (1, 7.5)


def test_malformed_json_on_query(make_client):
    client = make_client()
    task_id = client.post(CREATE, json=body(), headers=AUTH).json()["id"]
    _fault(client, endpoint="query", action="malformed_json", count=1)
    with pytest.raises(json.JSONDecodeError):
        json.loads(client.get(f"/v1/tasks/{task_id}", headers=AUTH).content)
    assert client.get(f"/v1/tasks/{task_id}", headers=AUTH).json()["id"] == task_id


def test_drop_actions_raise_in_process_and_drop_after_create_keeps_the_task(make_client):
    client = make_client()
    _fault(client, endpoint="create", action="drop_connection", count=1)
    with pytest.raises(ConnectionDroppedError):
        client.post(CREATE, json=body(), headers=AUTH)
    _fault(client, endpoint="create", action="drop_after_create", count=1)
    with pytest.raises(ConnectionDroppedError):
        client.post(CREATE, json=body(), headers=AUTH)

    stats = client.get("/_emulator/stats").json()
    assert stats["creates_accepted"] == 1
    assert stats["creates_rejected"] == {"dropped": 1}
    assert stats["tasks_total"] == 1


def test_rewrite_results_replaces_every_result_url(make_client, clock):
    client = make_client(fixed_duration=1)
    _, task_id = _completed_url(client, clock)
    _fault(client, endpoint="query", action="rewrite_results", url="http://169.254.169.254/latest/")
    task = client.get(f"/v1/tasks/{task_id}", headers=AUTH).json()
    assert task["results"] == ["http://169.254.169.254/latest/"]
    assert task["result_data"] == [{"image_url": "http://169.254.169.254/latest/"}]


def test_expire_results_makes_links_answer_403_from_then_on(make_client, clock):
    client = make_client(fixed_duration=1)
    url, task_id = _completed_url(client, clock)
    _fault(client, endpoint="file", action="expire_results", task_id=task_id, count=1)
    assert client.get(url).status_code == 403
    assert client.get(url).status_code == 403
    assert client.get(f"/_emulator/tasks/{task_id}").json()["links_expired"] is True


def test_not_image_serves_html_labelled_as_png(make_client, clock):
    client = make_client(fixed_duration=1)
    url, _ = _completed_url(client, clock)
    _fault(client, endpoint="file", action="not_image", count=1)
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"<!DOCTYPE html>")


@pytest.mark.parametrize("chunked", [False, True])
def test_large_file_streams_a_png_header_and_the_requested_bytes(make_client, clock, chunked):
    client = make_client(fixed_duration=1)
    url, _ = _completed_url(client, clock)
    _fault(client, endpoint="file", action="large_file", bytes=3_000_000, chunked=chunked)

    with client.stream("GET", url) as response:
        total = 0
        head = b""
        for chunk in response.iter_bytes():
            head = head or chunk
            total += len(chunk)
        length = response.headers.get("content-length")

    assert head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR"
    assert total == 33 + 3_000_000
    assert length == (None if chunked else str(total))


def test_file_status_fault(make_client, clock):
    client = make_client(fixed_duration=1)
    url, _ = _completed_url(client, clock)
    _fault(client, endpoint="file", action="status", status=500, count=1)
    assert client.get(url).status_code == 500
    assert Image.open(io.BytesIO(client.get(url).content)).format == "PNG"


@pytest.mark.parametrize("rule", [
    {"endpoint": "create", "action": "large_file", "bytes": 10},
    {"endpoint": "file", "action": "fail_task"},
    {"endpoint": "create", "action": "status"},
    {"endpoint": "query", "action": "delay"},
    {"endpoint": "nowhere", "action": "status", "status": 500},
    {"endpoint": "create", "action": "status", "status": 500, "probability": 2},
    {"endpoint": "create", "action": "status", "status": 500, "colour": "red"},
])  # fmt: skip
def test_invalid_rules_are_refused_with_400(make_client, rule):
    client = make_client()
    assert client.post("/_emulator/faults", json=rule).status_code == 400


def test_rules_are_listed_with_hits_deleted_and_cleared(make_client):
    client = make_client()
    rule = _fault(client, endpoint="create", action="status", status=500, count=2)
    _fault(client, endpoint="query", action="status", status=503)
    client.post(CREATE, json=body(), headers=AUTH)

    listed = client.get("/_emulator/faults").json()
    assert [r["id"] for r in listed] == [rule["id"], "fault-2"]
    assert listed[0]["hits"] == 1
    assert client.delete(f"/_emulator/faults/{rule['id']}").json() == {"deleted": True}
    assert len(client.get("/_emulator/faults").json()) == 1
    client.delete("/_emulator/faults")
    assert client.get("/_emulator/faults").json() == []
    assert client.get("/_emulator/stats").json()["faults_fired"] == 1


def test_reset_forgets_everything(make_client):
    client = make_client(credits=5)
    client.post(CREATE, json=body(), headers=AUTH)
    _fault(client, endpoint="create", action="status", status=500)

    client.post("/_emulator/reset")

    stats = client.get("/_emulator/stats").json()
    assert (stats["tasks_total"], stats["creates_accepted"], stats["credits"]) == (0, 0, 5)
    assert client.get("/_emulator/faults").json() == []
    assert client.post(CREATE, json=body(), headers=AUTH).status_code == 200
