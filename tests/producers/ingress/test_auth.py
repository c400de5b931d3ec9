"""Bearer tokens: parsing, hashing, 401s, and no route open without one."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nanobanana_queue.producers.ingress.auth import TokenRegistry
from nanobanana_queue.workers.settings import ConfigError
from tests.producers.ingress.conftest import TOKENS, Ingress, auth


def test_tokens_parse_into_producer_names_and_keep_only_digests() -> None:
    registry = TokenRegistry.parse(" alice : tok-a , bob:tok-b,")
    assert registry.producer_for("tok-a") == "alice"
    assert registry.producer_for("tok-b") == "bob"
    assert registry.producer_for("tok-c") is None and registry.producer_for("") is None
    kept = repr(registry) + repr(registry.entries)
    assert "tok-a" not in kept and "tok-b" not in kept


@pytest.mark.parametrize("spec", ["alice", "alice:", ":tok", "alice:tok,bob"])
def test_a_malformed_token_entry_is_a_config_error_naming_its_position(spec: str) -> None:
    with pytest.raises(ConfigError, match="NBQ_INGRESS_TOKENS: entry"):
        TokenRegistry.parse(spec)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKENS['alice']}"},
        {"Authorization": TOKENS["alice"]},
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs/x"),
        ("GET", "/v1/jobs/x/images"),
        ("DELETE", "/v1/jobs/x"),
        ("POST", "/v1/batches"),
        ("GET", "/v1/batches/x"),
    ],
)
def test_requests_without_a_valid_bearer_token_answer_401(
    ingress: Ingress, headers: dict[str, str], method: str, path: str
) -> None:
    body = {"prompt": "p"} if path == "/v1/jobs" else {"requests": [{"prompt": "p"}]}
    response = ingress.client.request(
        method, path, headers=headers, json=body if method == "POST" else None
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"
    assert ingress.job_count() == 0


def test_without_configured_tokens_every_job_route_is_closed(
    make_ingress: Callable[..., Ingress],
) -> None:
    ingress = make_ingress(ingress_tokens=None)
    assert ingress.client.post("/v1/jobs", json={"prompt": "p"}, headers=auth()).status_code == 401
    assert ingress.client.get("/healthz").status_code == 200
