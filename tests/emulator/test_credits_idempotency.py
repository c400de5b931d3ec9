"""Credits (402 when short) and ``Idempotency-Key`` (ignored by default, as the vendor
documents no support; with ``honour_idempotency`` one task per key and API key)."""

from __future__ import annotations

from tests.emulator.conftest import AUTH, CREATE, body


def test_short_balance_answers_402_insufficient_quota(make_client, schema_validator):
    client = make_client(credits=4.0)

    first = client.post(CREATE, json=body(quality="2K"), headers=AUTH)
    second = client.post(CREATE, json=body(quality="2K"), headers=AUTH)

    assert first.status_code == 200
    assert second.status_code == 402
    schema_validator("ErrorResponse", second.json())
    assert second.json()["error"]["code"] == "insufficient_quota"
    assert second.json()["error"]["type"] == "insufficient_quota_error"
    stats = client.get("/_emulator/stats").json()
    assert stats["credits"] == 1.5
    assert stats["creates_rejected"] == {"402": 1}


def test_stats_list_each_tasks_charge_and_their_sum_per_idempotency_key(make_client):
    client = make_client(credits=6.0)
    first = client.post(CREATE, json=body(quality="2K"), headers={**AUTH, "Idempotency-Key": "k"})
    again = client.post(CREATE, json=body(quality="1K"), headers={**AUTH, "Idempotency-Key": "k"})
    refused = client.post(CREATE, json=body(quality="4K"), headers=AUTH)  # 402: no charge
    plain = client.post(CREATE, json=body(quality="1K"), headers=AUTH)
    assert refused.status_code == 402
    stats = client.get("/_emulator/stats").json()
    assert stats["charges_by_task"] == {
        first.json()["id"]: 2.5,
        again.json()["id"]: 1.6,
        plain.json()["id"]: 1.6,
    }
    assert stats["charges_by_idempotency_key"] == {"k": 4.1}
    assert stats["credits_charged"] == round(sum(stats["charges_by_task"].values()), 6)


def test_a_cheaper_quality_still_fits_the_rest_of_the_balance(make_client):
    client = make_client(credits=4.0)
    client.post(CREATE, json=body(quality="2K"), headers=AUTH)
    assert client.post(CREATE, json=body(quality="1K"), headers=AUTH).status_code == 402
    client.put("/_emulator/credits", json={"credits": 1.6})
    assert client.post(CREATE, json=body(quality="1K"), headers=AUTH).status_code == 200


def test_credits_can_be_topped_up_and_made_unlimited(make_client):
    client = make_client(credits=0)
    assert client.post(CREATE, json=body(), headers=AUTH).status_code == 402

    assert client.put("/_emulator/credits", json={"credits": None}).json() == {"credits": None}
    assert client.post(CREATE, json=body(), headers=AUTH).status_code == 200
    assert client.put("/_emulator/credits", json={"credits": "lots"}).status_code == 400


def test_by_default_a_repeated_idempotency_key_creates_and_charges_a_second_task(make_client):
    client = make_client(credits=10)
    headers = {**AUTH, "Idempotency-Key": "job-0"}

    ids = {client.post(CREATE, json=body(), headers=headers).json()["id"] for _ in range(2)}

    assert len(ids) == 2
    stats = client.get("/_emulator/stats").json()
    assert stats["honour_idempotency"] is False
    assert stats["creates_by_idempotency_key"] == {"job-0": 2}
    assert stats["credits"] == 5.0  # charged twice


def test_honoured_a_repeat_with_the_same_idempotency_key_returns_the_first_task(make_client):
    client = make_client(credits=10, honour_idempotency=True)
    headers = {**AUTH, "Idempotency-Key": "job-1"}

    first = client.post(CREATE, json=body(), headers=headers).json()
    again = client.post(CREATE, json=body(), headers=headers).json()

    assert again["id"] == first["id"]
    stats = client.get("/_emulator/stats").json()
    assert stats["creates_accepted"] == 1
    assert stats["idempotent_repeats"] == 1
    assert stats["creates_by_idempotency_key"] == {"job-1": 1}
    assert stats["credits"] == 7.5  # charged once
    assert client.get(f"/_emulator/tasks/{first['id']}").json()["idempotency_key"] == "job-1"


def test_idempotency_is_scoped_to_the_api_key(make_client):
    client = make_client(api_keys=[], honour_idempotency=True)
    one = client.post(
        CREATE, json=body(), headers={"Authorization": "Bearer a", "Idempotency-Key": "k"}
    )
    two = client.post(
        CREATE, json=body(), headers={"Authorization": "Bearer b", "Idempotency-Key": "k"}
    )
    assert one.json()["id"] != two.json()["id"]


def test_with_idempotency_off_repeats_create_and_stats_show_the_duplicate(make_client):
    client = make_client(honour_idempotency=True)
    client.put("/_emulator/idempotency", json={"enabled": False})
    headers = {**AUTH, "Idempotency-Key": "job-2"}

    ids = {client.post(CREATE, json=body(), headers=headers).json()["id"] for _ in range(2)}

    assert len(ids) == 2
    stats = client.get("/_emulator/stats").json()
    assert stats["creates_by_idempotency_key"] == {"job-2": 2}
    assert stats["duplicate_idempotency_keys"] == ["job-2"]


def test_repeat_of_an_invalid_request_is_still_rejected(make_client):
    client = make_client(honour_idempotency=True)
    headers = {**AUTH, "Idempotency-Key": "job-3"}
    assert client.post(CREATE, json=body(size="2:1"), headers=headers).status_code == 400
    assert client.post(CREATE, json=body(), headers=headers).status_code == 200


def test_concurrent_repeats_of_one_key_create_a_single_task():
    import asyncio

    import httpx

    from nanobanana_queue.emulator import EmulatorConfig, create_app

    app = create_app(EmulatorConfig(api_keys=["test-key"], credits=100, honour_idempotency=True))

    async def burst() -> set[str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://emu") as http:
            headers = {**AUTH, "Idempotency-Key": "same"}
            responses = await asyncio.gather(
                *(http.post(CREATE, json=body(), headers=headers) for _ in range(50))
            )
        return {response.json()["id"] for response in responses}

    assert len(asyncio.run(burst())) == 1
    assert app.state.stats.creates_by_idempotency_key == {"same": 1}
    assert app.state.credits == 97.5
