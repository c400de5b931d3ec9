"""Status over time: pending -> processing (rising progress) -> completed | failed."""

from __future__ import annotations

import statistics

from nanobanana_queue.emulator.config import EmulatorConfig
from nanobanana_queue.emulator.state import EmulatorState
from tests.emulator.conftest import AUTH, CREATE, body, state_of


def _create(client, **fields):
    response = client.post(CREATE, json=body(**fields), headers=AUTH)
    assert response.status_code == 200
    return response.json()["id"]


def _query(client, task_id):
    response = client.get(f"/v1/tasks/{task_id}", headers=AUTH)
    assert response.status_code == 200
    return response.json()


def test_task_goes_pending_processing_completed_with_rising_progress(
    make_client, clock, schema_validator
):
    client = make_client(fixed_duration=30)
    task_id = _create(client)

    seen = []
    for _ in range(12):
        task = _query(client, task_id)
        schema_validator("ImageGenerationResponse", {k: v for k, v in task.items()})
        seen.append((task["status"], task["progress"]))
        clock.advance(3)

    statuses = [status for status, _ in seen]
    assert statuses[0] == "pending"
    assert "processing" in statuses
    assert statuses[-1] == "completed"
    order = {"pending": 0, "processing": 1, "completed": 2}
    assert [order[s] for s in statuses] == sorted(order[s] for s in statuses)
    progress = [p for _, p in seen]
    assert progress == sorted(progress) and progress[-1] == 100
    processing = [p for s, p in seen if s == "processing"]
    assert all(0 < p < 100 for p in processing)


def test_completed_task_carries_results_and_result_data(make_client, clock):
    client = make_client(fixed_duration=10)
    task_id = _create(client)
    clock.advance(10)

    task = _query(client, task_id)

    assert task["status"] == "completed"
    assert task["task_info"]["can_cancel"] is False
    assert len(task["results"]) == 1
    assert task["result_data"] == [{"image_url": task["results"][0]}]
    assert task["results"][0].startswith(f"http://testserver/files/{task_id}/0.png?expires=")


def test_timeline_reports_unix_times_and_duration(make_client, clock):
    client = make_client(fixed_duration=20)
    task_id = _create(client)

    timeline = client.get(f"/_emulator/tasks/{task_id}").json()

    assert timeline["created_at"] == clock.now
    assert timeline["finishes_at"] == clock.now + 20
    assert timeline["finished_at"] is None
    assert timeline["duration_s"] == 20
    clock.advance(21)
    assert client.get(f"/_emulator/tasks/{task_id}").json()["finished_at"] == clock.now - 1


def test_time_scale_shrinks_estimate_and_duration_alike(make_client, clock):
    client = make_client(time_scale=0.01, fixed_duration=40)
    response = client.post(CREATE, json=body(quality="4K"), headers=AUTH)
    created = response.json()

    # The spec types estimated_time integer: whole seconds, rounded up; the exact scaled
    # figure travels in the emulator's own header.
    assert created["task_info"]["estimated_time"] == 1
    assert response.headers["X-Emulator-Estimated-Time"] == "0.6"
    clock.advance(0.39)
    assert _query(client, created["id"])["status"] == "processing"
    clock.advance(0.02)
    assert _query(client, created["id"])["status"] == "completed"


def test_durations_spread_around_the_estimate_and_repeat_with_the_seed():
    def draws(seed):
        state = EmulatorState.build(EmulatorConfig(seed=seed))
        return [state.durations.draw_nominal_s("2K", "auto") for _ in range(400)]

    first, again, other = draws(1), draws(1), draws(2)

    assert first == again and first != other
    within = sum(0.7 * 30 <= d <= 1.3 * 30 for d in first) / len(first)
    assert within > 0.8
    assert 27 < statistics.median(first) < 33


def test_high_thinking_and_4k_take_longer_on_average():
    state = EmulatorState.build(EmulatorConfig(seed=3))
    draw = state.durations.draw_nominal_s
    quick = statistics.mean(draw("1K", "min") for _ in range(200))
    slow = statistics.mean(draw("4K", "high") for _ in range(200))
    assert slow > 3 * quick


def test_stats_count_tasks_by_status(make_client, clock):
    client = make_client(fixed_duration=10)
    _create(client)
    clock.advance(5)
    _create(client)
    stats = client.get("/_emulator/stats").json()
    assert stats["tasks_by_status"] == {"processing": 1, "pending": 1}
    assert state_of(client).tasks_by_status() == stats["tasks_by_status"]
