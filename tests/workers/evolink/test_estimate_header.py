"""The emulator's exact estimate header refines the integer one, and only within its second.

The real API never sends ``X-Emulator-Estimated-Time``: without it the integer of the spec
is used unchanged, so the poll schedule is always exercised with what production sees.
"""

from __future__ import annotations

import httpx
import pytest

from nanobanana_queue.workers.evolink.client import EvolinkClient
from nanobanana_queue.workers.evolink.models import GenerationRequest

TASK = {"id": "task-unified-1-abcdefgh", "status": "pending", "progress": 0,
        "task_info": {"can_cancel": True, "estimated_time": 1}}  # fmt: skip


def _estimate(header: str | None, estimated_time: int = 1) -> float | None:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {} if header is None else {"X-Emulator-Estimated-Time": header}
        body = {**TASK, "task_info": {"estimated_time": estimated_time}}
        return httpx.Response(200, json=body, headers=headers)

    http = httpx.Client(transport=httpx.MockTransport(handler))
    with EvolinkClient("http://api.test", "k", http_client=http) as client:
        return client.create_task(GenerationRequest(prompt="a cat")).estimated_time_s


def test_without_the_header_the_integer_estimate_is_used() -> None:
    assert _estimate(None) == 1


def test_a_consistent_exact_estimate_refines_the_integer() -> None:
    assert _estimate("0.3") == pytest.approx(0.3)
    assert _estimate("29.5", estimated_time=30) == pytest.approx(29.5)


@pytest.mark.parametrize("header", ["5", "0", "-1", "0.0001x", "nan", ""])
def test_an_inconsistent_or_unreadable_header_is_ignored(header: str) -> None:
    assert _estimate(header) == 1
