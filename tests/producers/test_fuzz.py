"""Fuzzing the producer's front doors: ``Producer.enqueue``, ``parse_jsonl`` and ``nbq batch``.

Whatever a caller sends, a bad request is refused with ``InvalidRequestError`` naming a
field, and nothing reaches Redis (no job record, no message); a batch file never crashes
the parser, and every bad line is reported with its number. No worker runs here: the
producer only needs a test-owned Redis.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from nanobanana_queue.producers import InvalidRequestError, Producer
from nanobanana_queue.producers.batch import BadLine, BatchLine, parse_jsonl
from nanobanana_queue.workers.app import create_app
from nanobanana_queue.workers.evolink.models import GenerationRequest
from nanobanana_queue.workers.jobs.ids import InvalidJobIdError, validate_job_id
from nanobanana_queue.workers.runtime import Runtime
from nanobanana_queue.workers.settings import Settings
from tests.support.redis_server import RedisServer

FIELDS = ["model", "prompt", "size", "quality", "image_urls", "model_params", "callback_url"]
SUBMIT_QUEUE = "submit"  # where nbq.generate goes (workers.contract)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
#: Values near the valid ones, so fuzzing reaches the deeper checks too.
field_values: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from(["nano-banana-2-beta", "nano-banana-2", ""]) | json_values,
    "prompt": st.text(max_size=50) | st.just(" \t\n") | st.text(min_size=2001, max_size=2100),
    "size": st.sampled_from(["auto", "1:1", "16:9", "2:1", "16/9", ""]) | json_values,
    "quality": st.sampled_from(["1K", "2K", "4K", "1k", "8K"]) | json_values,
    "image_urls": st.lists(
        st.sampled_from(["https://example.com/a.png", "http://127.0.0.1/x", "ftp://x", "https://"])
        | st.text(max_size=30),
        max_size=16,
    )
    | json_values,
    "model_params": st.fixed_dictionaries(
        {}, optional={"thinking_level": st.sampled_from(["auto", "min", "high", "max"])}
    )
    | json_values,
    "callback_url": st.sampled_from(["https://example.com/cb", "http://example.com/cb"])
    | st.text(max_size=30),
}
requests = st.fixed_dictionaries(
    {}, optional={name: strategy for name, strategy in field_values.items()}
) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), json_values, max_size=6)
job_ids = (
    st.none() | st.text(max_size=140) | st.text(alphabet=string.ascii_letters + "-_./", max_size=12)
)


@pytest.fixture
def producer(redis_server: RedisServer) -> Producer:
    settings = Settings(broker_url=redis_server.url, evolink_api_key="fuzz-key")
    return Producer(
        settings, celery_app=create_app(settings), runtime=Runtime.from_settings(settings)
    )


def _is_valid(request: dict[str, Any], job_id: str | None) -> bool:
    try:
        GenerationRequest.model_validate(request)
        if job_id is not None:
            validate_job_id(job_id)
    except (ValidationError, InvalidJobIdError, TypeError):
        return False
    return True


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=requests, job_id=job_ids)
@example(request={}, job_id=None)
@example(request={"prompt": "   "}, job_id=None)
@example(request={"prompt": "ok", "size": "16:9", "quality": "4K", "seed": 1}, job_id=None)
@example(request={"prompt": "ok"}, job_id="../../etc/passwd")
def test_every_invalid_request_is_refused_naming_a_field_and_writes_nothing(
    producer: Producer, request: dict[str, Any], job_id: str | None
) -> None:
    redis = producer.runtime.redis
    redis.flushdb()
    refused: InvalidRequestError | None = None
    try:
        handle = producer.enqueue(request, job_id=job_id)
    except InvalidRequestError as exc:
        refused = exc
    if refused is not None:
        # Refused: the error names the field, and nothing was written or sent
        named = refused.field or str(refused).split(":", 1)[0]
        assert named and (
            named.split(".")[0] in {*FIELDS, "job_id", "request"} or named in request
        ), (
            refused.field,
            str(refused),
        )
        assert redis.keys("nbq:job:*") == []
        assert redis.llen(SUBMIT_QUEUE) == 0
        assert not _is_valid(request, job_id)
        return
    # Accepted: only ever a valid request, recorded once and sent once
    assert _is_valid(request, job_id), (request, job_id)
    assert redis.keys("nbq:job:*") == [f"nbq:job:{handle.job_id}".encode()]
    assert redis.llen(SUBMIT_QUEUE) == 1


#: Lines that look like batch input: JSON of anything, request-like objects, or raw text.
batch_lines = st.one_of(
    st.text(max_size=60),
    json_values.map(json.dumps),
    requests.map(json.dumps),
    st.tuples(requests, st.text(max_size=10)).map(lambda r: json.dumps({**r[0], "job_id": r[1]})),
)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(batch_lines, max_size=12))
def test_parse_jsonl_never_raises_and_reports_every_bad_line_by_number(lines: list[str]) -> None:
    items = list(parse_jsonl(line + "\n" for line in lines))
    # One item per non-blank line, in order, each carrying that line's number
    expected = [n for n, line in enumerate(lines, start=1) if line.strip()]
    assert [item.line_no for item in items] == expected
    for item in items:
        if isinstance(item, BadLine):
            assert item.error
        else:
            assert isinstance(item, BatchLine) and isinstance(item.request, GenerationRequest)


def test_a_deeply_nested_line_is_a_bad_line_not_a_crash() -> None:
    items = list(parse_jsonl(["[" * 100_000, '{"prompt": "fine"}']))
    assert isinstance(items[0], BadLine) and items[0].line_no == 1
    assert isinstance(items[1], BatchLine)


def test_nbq_batch_enqueues_the_good_lines_and_names_each_bad_line(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from nanobanana_queue.producers.cli.main import app
    from nanobanana_queue.workers.runtime import reset_runtime
    from nanobanana_queue.workers.settings import get_settings

    lines = [
        '{"prompt": "a red kite", "quality": "1K"}',  # 1 good
        "not json at all",  # 2 bad: not JSON
        "",  # 3 blank: skipped
        '["a", "list"]',  # 4 bad: not an object
        '{"prompt": "x", "size": "2:1"}',  # 5 bad: size
        '{"prompt": "caller id", "job_id": "batch-fuzz-1"}',  # 6 good
        '{"prompt": "bad id", "job_id": "../escape"}',  # 7 bad: job_id
        '{"prompt": "  "}',  # 8 bad: blank prompt
        '{"prompt": "ok", "job_id": 7}',  # 9 bad: job_id type
        '{"prompt": "the last good one", "size": "16:9"}',  # 10 good
    ]
    batch_file = tmp_path / "batch.jsonl"
    batch_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setenv("NBQ_BROKER_URL", redis_server.url)
    get_settings.cache_clear()
    reset_runtime()
    try:
        result = CliRunner().invoke(app, ["batch", str(batch_file)])
    finally:
        get_settings.cache_clear()
        reset_runtime()
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 1, output  # lines were skipped: not a success
    assert ": 3 new, 0 already enqueued (not sent again), 6 bad line(s)" in output
    assert "6 line(s) skipped" in output
    for line_no in (2, 4, 5, 7, 8, 9):
        assert f"line {line_no}:" in output, output
    for line_no in (1, 3, 6, 10):
        assert f"line {line_no}:" not in output
    assert "size" in output and "job_id" in output and "not valid JSON" in output
    redis = redis_server.client()
    assert len(redis.keys("nbq:job:*")) == 3
    assert redis.exists("nbq:job:batch-fuzz-1")
    assert redis.llen(SUBMIT_QUEUE) == 3
