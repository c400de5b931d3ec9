"""Batches from JSONL: one request per line, bad lines reported by number and skipped."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from producers.api import validate_request
from producers.errors import InvalidRequestError
from workers.evolink.models import GenerationRequest

#: Keys a batch line may carry beside the request fields.
LINE_META_KEYS = ("job_id",)


@dataclass(frozen=True)
class BatchLine:
    line_no: int
    request: GenerationRequest
    job_id: str | None


@dataclass(frozen=True)
class BadLine:
    line_no: int
    error: str


def parse_jsonl(lines: Iterable[str]) -> Iterator[BatchLine | BadLine]:
    """Each non-blank line: a JSON object of request fields, optionally with ``job_id``."""
    for line_no, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            yield BadLine(line_no, f"not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        except RecursionError:
            yield BadLine(line_no, "not valid JSON: nested too deeply")
            continue
        if not isinstance(data, dict):
            yield BadLine(line_no, "each line must be a JSON object")
            continue
        job_id = data.pop("job_id", None)
        if job_id is not None and not isinstance(job_id, str):
            yield BadLine(line_no, "job_id must be a string")
            continue
        try:
            yield BatchLine(line_no, validate_request(data), job_id)
        except InvalidRequestError as exc:
            yield BadLine(line_no, str(exc))
