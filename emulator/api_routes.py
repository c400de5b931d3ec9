"""The vendor endpoints: ``POST /v1/images/generations`` and ``GET /v1/tasks/{id}``.

Hot path: no Pillow, no awaits besides reading the body, JSON via orjson when present.
Fault rules are consulted only when some are set.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from nanobanana_queue.emulator import jsonio
from nanobanana_queue.emulator.dropping import mark_drop
from nanobanana_queue.emulator.faults import FaultRule
from nanobanana_queue.emulator.replies import EmulatedApiError, format_seconds, json_response
from nanobanana_queue.emulator.state import EmulatorState
from nanobanana_queue.emulator.validation import validate_create

_PRE = frozenset({"status", "drop_connection"})
_FAIL = frozenset({"fail_task"})
_DROP_AFTER = frozenset({"drop_after_create"})
_MALFORMED = frozenset({"malformed_json"})
_REWRITE = frozenset({"rewrite_results"})
_BAD_JSON = object()


def fault_error(state: EmulatorState, rule: FaultRule) -> EmulatedApiError:
    """The error answer a ``status`` rule asks for (``retry_after`` scaled)."""
    assert rule.status is not None
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if rule.retry_after is not None:
        headers["Retry-After"] = format_seconds(state.config.scaled(rule.retry_after))
    if rule.fallback_suggestion is not None:
        extra["fallback_suggestion"] = rule.fallback_suggestion
    elif rule.status == 429 and rule.retry_after is not None:
        extra["fallback_suggestion"] = f"retry after {format_seconds(rule.retry_after)} seconds"
    return EmulatedApiError(rule.status, rule.message, code=rule.code, headers=headers, extra=extra)


def malformed(body: bytes, status: int = 200) -> Response:
    """The real body cut in half: JSON no parser accepts."""
    return Response(body[: max(1, len(body) // 2)], status, media_type="application/json")


class VendorApi:
    """Handlers of the two vendor endpoints, bound to one state."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def authenticate(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        accepted = self.state.config.api_keys
        if scheme.lower() != "bearer" or not key or (accepted and key not in accepted):
            raise EmulatedApiError(401, "Invalid or expired token", code="unauthorized")
        return key

    async def read_body(self, request: Request) -> bytes:
        limit = self.state.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise EmulatedApiError(413, f"Request body exceeds {limit} bytes")
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise EmulatedApiError(413, f"Request body exceeds {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def create(self, request: Request) -> Response:
        state = self.state
        try:
            return await self._create(request)
        except EmulatedApiError as exc:
            state.stats.creates_rejected[str(exc.status)] += 1
            return exc.response()

    async def _create(self, request: Request) -> Response:
        state = self.state
        api_key = self.authenticate(request)
        raw = await self.read_body(request)
        body: Any
        try:
            body = jsonio.loads(raw)
        except ValueError:
            body = _BAD_JSON
        prompt = body.get("prompt") if isinstance(body, dict) else None
        prompt = prompt if isinstance(prompt, str) else None
        faults = state.faults
        if faults.rules:
            delay_s = faults.delays("create", prompt=prompt)
            if delay_s:
                await asyncio.sleep(delay_s)
            rule = faults.fire("create", _PRE, prompt=prompt)
            if rule is not None:
                if rule.action == "drop_connection":
                    state.stats.creates_rejected["dropped"] += 1
                    return mark_drop(request)
                raise fault_error(state, rule)
        if body is _BAD_JSON:
            raise EmulatedApiError(400, "Request body is not valid JSON")
        valid = validate_create(
            body, allow_insecure_callbacks=state.config.allow_insecure_callbacks
        )
        idempotency_key = request.headers.get("idempotency-key") or None
        if idempotency_key is not None and state.honour_idempotency:
            existing = state.store.find_idempotent(api_key, idempotency_key)
            if existing is not None:
                state.stats.idempotent_repeats += 1
                return json_response(
                    state.store.view(existing, state.clock()), headers=existing.headers()
                )
        cost = state.charge(valid.quality)
        fail = faults.fire("create", _FAIL, prompt=valid.prompt) if faults.rules else None
        task = state.create_task(
            valid, api_key=api_key, idempotency_key=idempotency_key, cost=cost, fail=fail
        )
        payload = jsonio.dumps(state.store.view(task, state.clock()))
        if faults.rules:
            if faults.fire("create", _DROP_AFTER, prompt=valid.prompt):
                return mark_drop(request)
            if faults.fire("create", _MALFORMED, prompt=valid.prompt):
                return malformed(payload)
        return Response(payload, 200, task.headers(), media_type="application/json")

    async def query(self, request: Request) -> Response:
        state = self.state
        task_id: str = request.path_params["task_id"]
        state.stats.queries_total += 1
        try:
            return await self._query(request, task_id)
        except EmulatedApiError as exc:
            state.stats.queries_rejected[str(exc.status)] += 1
            return exc.response()

    async def _query(self, request: Request, task_id: str) -> Response:
        state = self.state
        self.authenticate(request)
        task = state.store.get(task_id)
        faults = state.faults
        prompt = task.prompt if task is not None else None
        if faults.rules:
            delay_s = faults.delays("query", task_id=task_id, prompt=prompt)
            if delay_s:
                await asyncio.sleep(delay_s)
            rule = faults.fire("query", _PRE, task_id=task_id, prompt=prompt)
            if rule is not None:
                if rule.action == "drop_connection":
                    state.stats.queries_rejected["dropped"] += 1
                    return mark_drop(request)
                raise fault_error(state, rule)
        if task is None:
            raise EmulatedApiError(404, f"Task not found: {task_id}", code="task_not_found")
        task.queries += 1
        state.stats.queries_by_task[task_id] += 1
        view = state.store.view(task, state.clock())
        if faults.rules:
            rewrite = "results" in view and faults.fire(
                "query", _REWRITE, task_id=task_id, prompt=prompt
            )
            if rewrite and rewrite.url is not None:
                view["results"] = [rewrite.url for _ in view["results"]]
                view["result_data"] = [{"image_url": rewrite.url} for _ in view["results"]]
            if faults.fire("query", _MALFORMED, task_id=task_id, prompt=prompt):
                return malformed(jsonio.dumps(view))
        return Response(jsonio.dumps(view), 200, task.headers(), media_type="application/json")
