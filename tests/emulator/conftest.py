"""In-process emulator clients (fast) and the vendor spec, for the emulator's tests."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS31Validator, oas31_format_checker

with warnings.catch_warnings():  # starlette 1.x nags about httpx; it still works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from nanobanana_queue.emulator import EmulatorConfig, create_app
from nanobanana_queue.emulator.app import EmulatorApp

#: ``../shared/evolink/`` beside the checkout; ``EVOLINK_CONTRACT_DIR`` points elsewhere
#: (a git worktree that lives in another directory).
SPEC_PATH = (
    Path(
        os.environ.get("EVOLINK_CONTRACT_DIR")
        or Path(__file__).resolve().parents[2].parent / "shared" / "evolink"
    )
    / "nano-banana-2-beta.openapi.yaml"
)
API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CREATE = "/v1/images/generations"


class FakeClock:
    """Unix time that only moves when a test says so."""

    def __init__(self, now: float = 1_757_156_493.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def body(**fields: Any) -> dict[str, Any]:
    """A valid create body with ``fields`` changed."""
    return {"model": "nano-banana-2-beta", "prompt": "a cat playing on the grass", **fields}


@pytest.fixture(scope="session")
def spec() -> dict[str, Any]:
    with SPEC_PATH.open() as handle:
        return dict(yaml.safe_load(handle))


@pytest.fixture(scope="session")
def schema_validator(spec: dict[str, Any]) -> Callable[[str, Any], None]:
    """``check(schema_name, instance)`` against ``components.schemas`` of the spec."""

    def check(name: str, instance: Any) -> None:
        schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
        OAS31Validator(schema, format_checker=oas31_format_checker).validate(instance)

    return check


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client(clock: FakeClock) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**config)`` -> a TestClient on a fresh app driven by the fake clock."""
    clients: list[TestClient] = []

    def make(*, real_clock: bool = False, **options: Any) -> TestClient:
        settings: dict[str, Any] = {
            "api_keys": [API_KEY],
            "public_url": "http://testserver",
            "max_pixels": 65536,
            "seed": 7,
            **options,
        }
        app = create_app(EmulatorConfig(**settings), clock=None if real_clock else clock)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = TestClient(app, raise_server_exceptions=True)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """Full-scale times (so ``estimated_time`` is an integer, as the spec says)."""
    return make_client()


def state_of(client: TestClient) -> Any:
    app = client.app
    assert isinstance(app, EmulatorApp)
    return app.state
