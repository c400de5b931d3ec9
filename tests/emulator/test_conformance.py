"""The emulator against the vendor spec: schemas, every enum value, every bad input."""

from __future__ import annotations

import re

import pytest

from nanobanana_queue.emulator.constants import QUALITIES, SIZES, THINKING_LEVELS
from tests.emulator.conftest import AUTH, CREATE, body

TASK_ID = re.compile(r"^task-unified-\d+-[a-z0-9]{8}$")


def test_create_returns_the_spec_task_object(client, schema_validator, clock):
    response = client.post(CREATE, json=body(), headers=AUTH)

    assert response.status_code == 200
    task = response.json()
    schema_validator("ImageGenerationResponse", task)
    assert TASK_ID.match(task["id"])
    assert task["id"].split("-")[2] == str(task["created"]) == str(int(clock.now))
    assert task["object"] == "image.generation.task"
    assert task["model"] == "nano-banana-2-beta"
    assert (task["status"], task["progress"], task["type"]) == ("pending", 0, "image")
    assert task["task_info"] == {"can_cancel": True, "estimated_time": 30}
    assert task["usage"] == {
        "billing_rule": "per_call",
        "credits_reserved": 2.5,
        "user_group": "default",
    }


@pytest.mark.parametrize("size", SIZES)
def test_every_size_is_accepted(client, schema_validator, size):
    response = client.post(CREATE, json=body(size=size), headers=AUTH)
    assert response.status_code == 200
    schema_validator("ImageGenerationResponse", response.json())


@pytest.mark.parametrize("quality", QUALITIES)
@pytest.mark.parametrize("thinking", THINKING_LEVELS)
def test_every_quality_and_thinking_level_is_accepted(client, quality, thinking):
    response = client.post(
        CREATE, json=body(quality=quality, model_params={"thinking_level": thinking}), headers=AUTH
    )
    assert response.status_code == 200
    estimate = response.json()["task_info"]["estimated_time"]
    assert isinstance(estimate, int)
    base = {"1K": 20, "2K": 30, "4K": 60}[quality]
    assert estimate == round(base * {"auto": 1.0, "min": 0.8, "high": 1.5}[thinking])


def test_credits_reserved_rise_with_quality(client):
    reserved = [
        client.post(CREATE, json=body(quality=q), headers=AUTH).json()["usage"]["credits_reserved"]
        for q in QUALITIES
    ]
    assert reserved == sorted(reserved) and len(set(reserved)) == 3


def test_full_request_with_every_optional_field_is_accepted(client, schema_validator):
    request = body(
        size="21:9",
        quality="4K",
        image_urls=[f"https://example.com/{i}.png" for i in range(14)],
        model_params={"thinking_level": "high"},
        callback_url="https://hooks.example.com/evolink?token=abc",
        unknown_field="ignored",
    )
    schema_validator("ImageGenerationRequest", request)
    assert client.post(CREATE, json=request, headers=AUTH).status_code == 200


BAD_INPUTS = [
    ({"model": None}, "model"),
    ({"model": "nano-banana-2"}, "model"),
    ({"model": 1}, "model"),
    ({"prompt": None}, "prompt"),
    ({"prompt": 42}, "prompt"),
    ({"prompt": "x" * 2001}, "prompt"),
    ({"size": "2:1"}, "size"),
    ({"size": None}, "size"),
    ({"size": "AUTO"}, "size"),
    ({"quality": "8K"}, "quality"),
    ({"quality": "1k"}, "quality"),
    ({"quality": 2}, "quality"),
    ({"image_urls": "https://example.com/a.png"}, "image_urls"),
    ({"image_urls": [f"https://example.com/{i}.png" for i in range(15)]}, "image_urls"),
    ({"image_urls": [1]}, "image_urls[0]"),
    ({"image_urls": ["https://example.com/a.png", "not a uri"]}, "image_urls[1]"),
    ({"model_params": "high"}, "model_params"),
    ({"model_params": {"thinking_level": "max"}}, "model_params.thinking_level"),
    ({"callback_url": 5}, "callback_url"),
    ({"callback_url": "http://hooks.example.com/cb"}, "callback_url"),
    ({"callback_url": "ftp://hooks.example.com/cb"}, "callback_url"),
    ({"callback_url": "https://hooks.example.com/" + "a" * 2048}, "callback_url"),
    ({"callback_url": "https://127.0.0.1/cb"}, "callback_url"),
    ({"callback_url": "https://10.1.2.3/cb"}, "callback_url"),
    ({"callback_url": "https://172.16.0.1/cb"}, "callback_url"),
    ({"callback_url": "https://192.168.1.1/cb"}, "callback_url"),
    ({"callback_url": "https://169.254.169.254/latest"}, "callback_url"),
    ({"callback_url": "https://[::1]/cb"}, "callback_url"),
    ({"callback_url": "https://localhost/cb"}, "callback_url"),
]


@pytest.mark.parametrize(("change", "field"), BAD_INPUTS, ids=[str(c) for c, _ in BAD_INPUTS])
def test_bad_input_answers_400_naming_the_field(client, schema_validator, change, field):
    request = body(**change)

    response = client.post(CREATE, json=request, headers=AUTH)

    assert response.status_code == 400
    schema_validator("ErrorResponse", response.json())
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["type"] == "invalid_request_error"
    assert f"'{field}'" in error["message"]


@pytest.mark.parametrize("missing", ["model", "prompt"])
def test_missing_required_field_answers_400_naming_it(client, missing):
    request = body()
    del request[missing]
    response = client.post(CREATE, json=request, headers=AUTH)
    assert response.status_code == 400
    assert f"'{missing}'" in response.json()["error"]["message"]


@pytest.mark.parametrize("raw", [b"{", b"not json", b"[1, 2]", b'"text"', b""])
def test_body_that_is_not_a_json_object_answers_400(client, raw):
    response = client.post(
        CREATE, content=raw, headers={**AUTH, "content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_prompt_of_exactly_2000_characters_is_accepted(client):
    assert client.post(CREATE, json=body(prompt="p" * 2000), headers=AUTH).status_code == 200


def test_body_over_the_limit_answers_413(make_client):
    client = make_client(max_body_bytes=1000)
    response = client.post(CREATE, json=body(prompt="x" * 1500), headers=AUTH)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic test-key"},
    ],
)
def test_missing_or_wrong_key_answers_401_on_both_endpoints(client, schema_validator, headers):
    created = client.post(CREATE, json=body(), headers=headers)
    queried = client.get("/v1/tasks/task-unified-1-abcdefgh", headers=headers)
    for response in (created, queried):
        assert response.status_code == 401
        schema_validator("ErrorResponse", response.json())
        assert response.json()["error"]["type"] == "authentication_error"


def test_without_configured_keys_any_non_empty_key_is_accepted(make_client):
    client = make_client(api_keys=[])
    ok = client.post(CREATE, json=body(), headers={"Authorization": "Bearer anything"})
    empty = client.post(CREATE, json=body(), headers={"Authorization": "Bearer"})
    assert (ok.status_code, empty.status_code) == (200, 401)


def test_unknown_task_id_answers_404(client, schema_validator):
    response = client.get("/v1/tasks/task-unified-1-zzzzzzzz", headers=AUTH)
    assert response.status_code == 404
    schema_validator("ErrorResponse", response.json())
    assert response.json()["error"]["type"] == "not_found_error"


def test_insecure_callbacks_are_accepted_only_with_the_dev_flag(make_client):
    request = body(callback_url="http://127.0.0.1:9/cb")
    strict, relaxed = make_client(), make_client(allow_insecure_callbacks=True)
    assert strict.post(CREATE, json=request, headers=AUTH).status_code == 400
    assert relaxed.post(CREATE, json=request, headers=AUTH).status_code == 200
