"""Every emulator answer keeps to the vendor's response schemas at every time scale.

The spec types ``task_info.estimated_time`` ``integer``: a strict client breaks on
``0.3``. So at time scales 1, 0.1 and 0.01 the body carries whole seconds (rounded up)
and the exact scaled figure travels only in the emulator's own ``X-Emulator-Estimated-Time``
header. Schemathesis then drives the create operation from the spec itself.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
import uvicorn
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from nanobanana_queue.emulator import EmulatorConfig, create_app
from nanobanana_queue.emulator.timing import nominal_estimate_s
from tests.emulator.conftest import API_KEY, AUTH, CREATE, SPEC_PATH, body
from tests.support.procs import free_port, port_open, wait_until

SCALES = (1.0, 0.1, 0.01)
HEADER = "X-Emulator-Estimated-Time"


def _task_views(client: Any, clock: Any, *, quality: str, thinking: str) -> list[Any]:
    """Create, then query while pending, processing and after the end: every raw answer."""
    created = client.post(
        CREATE, json=body(quality=quality, model_params={"thinking_level": thinking}), headers=AUTH
    )
    answers = [created]
    task_id = created.json()["id"]
    timeline = client.get(f"/_emulator/tasks/{task_id}").json()
    for at in (timeline["started_at"] + 1e-6, timeline["finishes_at"] + 1e-6):
        clock.now = at
        answers.append(client.get(f"/v1/tasks/{task_id}", headers=AUTH))
    return answers


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize(("quality", "thinking"), [("1K", "min"), ("2K", "auto"), ("4K", "high")])
def test_create_and_query_answers_match_the_spec_with_an_integer_estimate(
    make_client: Callable[..., Any],
    clock: Any,
    schema_validator: Callable[[str, Any], None],
    scale: float,
    quality: str,
    thinking: str,
) -> None:
    client = make_client(time_scale=scale)

    answers = _task_views(client, clock, quality=quality, thinking=thinking)

    exact = round(nominal_estimate_s(quality, thinking) * scale, 6)
    statuses = []
    for response in answers:
        assert response.status_code == 200
        task = json.loads(response.text)
        schema_validator("ImageGenerationResponse", task)
        estimate = task["task_info"]["estimated_time"]
        assert type(estimate) is int  # not 1.0 either: the wire form is an integer
        assert estimate == max(1, math.ceil(exact - 1e-9))
        assert float(response.headers[HEADER]) == pytest.approx(exact)
        statuses.append(task["status"])
    assert statuses == ["pending", "processing", "completed"]


@pytest.mark.parametrize("scale", SCALES)
def test_a_failed_task_and_error_answers_match_the_spec(
    make_client: Callable[..., Any],
    clock: Any,
    schema_validator: Callable[[str, Any], None],
    scale: float,
) -> None:
    client = make_client(time_scale=scale, credits=3)
    client.post(
        "/_emulator/faults",
        json={"endpoint": "create", "action": "fail_task", "code": "content_policy_violation"},
    )
    answers = _task_views(client, clock, quality="2K", thinking="auto")
    failed = json.loads(answers[-1].text)
    assert failed["status"] == "failed"
    for response in answers:
        schema_validator("ImageGenerationResponse", json.loads(response.text))
    client.delete("/_emulator/faults")
    client.post(
        "/_emulator/faults",
        json={"endpoint": "create", "action": "status", "status": 429, "retry_after": 60},
    )
    limited = client.post(CREATE, json=body(), headers=AUTH)
    client.delete("/_emulator/faults")
    short = client.post(CREATE, json=body(), headers=AUTH)  # 0.5 credits left: 402
    for response, status in ((limited, 429), (short, 402)):
        assert response.status_code == status
        schema_validator("ErrorResponse", response.json())


# --- schemathesis: the create operation generated from the vendor spec --------------------


@pytest.fixture(scope="module", params=SCALES, ids=[f"scale-{s:g}" for s in SCALES])
def emulator_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A real emulator on uvicorn (in a thread) at each time scale."""
    port = free_port()
    config = EmulatorConfig(
        api_keys=[API_KEY], time_scale=request.param, max_pixels=4096, port=port, seed=3
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config), host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: port_open(port), what="emulator under uvicorn")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


with SPEC_PATH.open() as _handle:
    vendor_schema = schemathesis.openapi.from_dict(yaml.safe_load(_handle))


@vendor_schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_schemathesis_every_generated_create_gets_a_documented_answer(
    case: Any, emulator_url: str
) -> None:
    # The spec's descriptions hold rules its schema cannot (https-only, no private
    # callback hosts), so a schema-valid body may still get a 400: acceptance not checked.
    response = case.call_and_validate(
        base_url=emulator_url, headers=AUTH, excluded_checks=[positive_data_acceptance]
    )
    if response.status_code == 200:
        assert type(response.json()["task_info"]["estimated_time"]) is int
