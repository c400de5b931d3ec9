"""``/_emulator/...``: the control API tests use (not part of the vendor API, no auth)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from nanobanana_queue.emulator import jsonio
from nanobanana_queue.emulator.faults import FaultRule
from nanobanana_queue.emulator.replies import json_response
from nanobanana_queue.emulator.state import EmulatorState


def _bad(message: str) -> Response:
    return json_response({"error": {"code": "invalid_request", "message": message}}, 400)


class ControlApi:
    """Faults, credits, stats, task timelines and reset."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def _json(self, request: Request) -> Any:
        try:
            return jsonio.loads(await request.body())
        except ValueError:
            return None

    async def add_fault(self, request: Request) -> Response:
        body = await self._json(request)
        if not isinstance(body, dict):
            return _bad("body must be a JSON object describing one fault rule")
        try:
            rule = FaultRule.model_validate({**body, "id": None, "hits": 0})
        except ValidationError as exc:
            return _bad(str(exc))
        return json_response(self.state.faults.add(rule).model_dump(), 201)

    async def list_faults(self, request: Request) -> Response:
        return json_response([rule.model_dump() for rule in self.state.faults.rules])

    async def clear_faults(self, request: Request) -> Response:
        self.state.faults.clear()
        return json_response({"cleared": True})

    async def delete_fault(self, request: Request) -> Response:
        found = self.state.faults.remove(request.path_params["rule_id"])
        return json_response({"deleted": found}, 200 if found else 404)

    async def set_credits(self, request: Request) -> Response:
        body = await self._json(request)
        credits = body.get("credits", ...) if isinstance(body, dict) else ...
        if credits is not None and (
            isinstance(credits, bool) or not isinstance(credits, int | float)
        ):
            return _bad('body must be {"credits": <number or null>}')
        if credits is not None and credits < 0:
            return _bad("credits must not be negative")
        self.state.credits = None if credits is None else float(credits)
        return json_response({"credits": self.state.credits})

    async def get_credits(self, request: Request) -> Response:
        return json_response({"credits": self.state.credits})

    async def set_idempotency(self, request: Request) -> Response:
        body = await self._json(request)
        enabled = body.get("enabled") if isinstance(body, dict) else None
        if not isinstance(enabled, bool):
            return _bad('body must be {"enabled": true|false}')
        self.state.honour_idempotency = enabled
        return json_response({"enabled": enabled})

    async def stats(self, request: Request) -> Response:
        state = self.state
        snapshot = state.stats.snapshot()
        snapshot["tasks_by_status"] = state.tasks_by_status()
        snapshot["honour_idempotency"] = state.honour_idempotency
        snapshot["tasks_total"] = len(state.store.tasks)
        snapshot["faults_fired"] = state.faults.fired
        snapshot["credits"] = state.credits
        return json_response(snapshot)

    async def list_tasks(self, request: Request) -> Response:
        """Every task in create order: the emulator's own create log (which client's job
        was created when, by its ``Idempotency-Key``), for fairness checks."""
        now = self.state.clock()
        return json_response(
            [
                {
                    "id": task.id,
                    "status": task.status_at(now)[0],
                    "created_at": task.created_at,
                    "idempotency_key": task.idempotency_key,
                }
                for task in self.state.store.tasks.values()
            ]
        )

    async def task(self, request: Request) -> Response:
        state = self.state
        task = state.store.get(request.path_params["task_id"])
        if task is None:
            return json_response({"error": {"code": "not_found", "message": "no such task"}}, 404)
        now = state.clock()
        status, progress = task.status_at(now)
        width, height = state.image_dimensions(task)
        return json_response(
            {
                "id": task.id,
                "status": status,
                "progress": progress,
                "created": task.created,
                "created_at": task.created_at,
                "started_at": task.started_at,
                "finishes_at": task.finishes_at,
                "finished_at": task.finishes_at if now >= task.finishes_at else None,
                "duration_s": task.duration_s,
                "duration_nominal_s": task.duration_nominal_s,
                "estimated_time": task.estimated_time,
                "estimated_time_exact": task.estimated_time_exact,
                "size": task.size,
                "quality": task.quality,
                "thinking_level": task.thinking_level,
                "image_size": [width, height],
                "credits_reserved": task.credits_reserved,
                "idempotency_key": task.idempotency_key,
                "fail_code": task.fail_code,
                "results_expire_at": task.expires_at,
                "links_expired": not task.links_valid_at(now),
                "queries": task.queries,
                "downloads": task.downloads,
                "callback_url": task.callback_url,
                "callback_state": task.callback_state,
                "callback_deliveries": state.callbacks.describe(task),
                "view": state.store.view(task, now),
            }
        )

    async def reset(self, request: Request) -> Response:
        self.state.reset()
        return json_response({"reset": True})
