"""Fault rules: what the control API injects into the vendor endpoints.

A rule names an ``endpoint``, an ``action`` and how often it fires (``count`` times,
with ``probability`` p, or both; neither = every matching request). ``task_id`` and
``match`` (a substring of the prompt) narrow it. Rules are checked in the order added;
per phase the first matching rule fires, except ``delay`` rules, which all fire.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Endpoint = Literal["create", "query", "file", "callback"]
Action = Literal[
    "status",
    "delay",
    "malformed_json",
    "drop_connection",
    "drop_after_create",
    "fail_task",
    "expire_results",
    "not_image",
    "large_file",
    "rewrite_results",
    "drop",
]

#: Which actions make sense on which endpoint.
ACTIONS_BY_ENDPOINT: dict[str, frozenset[str]] = {
    "create": frozenset(
        {"status", "delay", "malformed_json", "drop_connection", "drop_after_create", "fail_task"}
    ),
    "query": frozenset({"status", "delay", "malformed_json", "drop_connection", "rewrite_results"}),
    "file": frozenset(
        {"status", "delay", "drop_connection", "expire_results", "not_image", "large_file"}
    ),
    "callback": frozenset({"delay", "drop"}),
}
_REQUIRED_PARAM = {
    "status": "status",
    "delay": "seconds",
    "large_file": "bytes",
    "rewrite_results": "url",
}


class FaultRule(BaseModel):
    """One injected fault; ``id`` and ``hits`` are filled in by the emulator."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    endpoint: Endpoint
    action: Action
    #: Fire at most this many times (``None`` = unlimited).
    count: int | None = Field(default=None, ge=1)
    #: Fire with this probability per matching request (``None`` = always).
    probability: float | None = Field(default=None, ge=0, le=1)
    task_id: str | None = None
    #: Substring of the prompt (of the request on create, of the task elsewhere).
    match: str | None = None
    #: ``status``: the HTTP status to answer.
    status: int | None = Field(default=None, ge=100, le=599)
    code: str | None = None
    message: str | None = None
    #: ``status``: ``Retry-After`` in nominal seconds (scaled).
    retry_after: float | None = Field(default=None, ge=0)
    #: ``status`` 429/503: a ``fallback_suggestion`` in the error body.
    fallback_suggestion: str | None = None
    #: ``delay``: real seconds to wait (NOT scaled: it is for exceeding client timeouts).
    seconds: float | None = Field(default=None, ge=0)
    #: ``large_file``: bytes to stream after the PNG header.
    bytes: int | None = Field(default=None, ge=0)
    #: ``large_file``: omit ``Content-Length`` (chunked transfer).
    chunked: bool = False
    #: ``rewrite_results``: the URL every result link is replaced with.
    url: str | None = None
    hits: int = 0

    @model_validator(mode="after")
    def _fits_endpoint(self) -> FaultRule:
        if self.action not in ACTIONS_BY_ENDPOINT[self.endpoint]:
            allowed = ", ".join(sorted(ACTIONS_BY_ENDPOINT[self.endpoint]))
            raise ValueError(f"action {self.action!r} not valid on {self.endpoint!r} ({allowed})")
        param = _REQUIRED_PARAM.get(self.action)
        if param is not None and getattr(self, param) is None:
            raise ValueError(f"action {self.action!r} needs {param!r}")
        return self

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.hits >= self.count


@dataclass
class FaultBook:
    """The active rules; matching consumes a ``count``."""

    rng: random.Random
    rules: list[FaultRule] = field(default_factory=list)
    fired: int = 0
    _next_id: int = 1

    def add(self, rule: FaultRule) -> FaultRule:
        rule.id = f"fault-{self._next_id}"
        self._next_id += 1
        self.rules.append(rule)
        return rule

    def remove(self, rule_id: str) -> bool:
        before = len(self.rules)
        self.rules = [rule for rule in self.rules if rule.id != rule_id]
        return len(self.rules) != before

    def clear(self) -> None:
        self.rules.clear()

    def fire(
        self,
        endpoint: str,
        actions: frozenset[str],
        *,
        task_id: str | None = None,
        prompt: str | None = None,
    ) -> FaultRule | None:
        """The first matching rule among ``actions`` (consumed), or ``None``."""
        if not self.rules:
            return None
        for rule in self.rules:
            if rule.action in actions and self._matches(rule, endpoint, task_id, prompt):
                return self._consume(rule)
        return None

    def delays(
        self, endpoint: str, *, task_id: str | None = None, prompt: str | None = None
    ) -> float:
        """Total real seconds of every matching ``delay`` rule (each consumed)."""
        if not self.rules:
            return 0.0
        total = 0.0
        for rule in self.rules:
            if rule.action == "delay" and self._matches(rule, endpoint, task_id, prompt):
                total += self._consume(rule).seconds or 0.0
        return total

    def _matches(
        self, rule: FaultRule, endpoint: str, task_id: str | None, prompt: str | None
    ) -> bool:
        if rule.endpoint != endpoint or rule.exhausted:
            return False
        if rule.task_id is not None and rule.task_id != task_id:
            return False
        if rule.match is not None and (prompt is None or rule.match not in prompt):
            return False
        return rule.probability is None or self.rng.random() < rule.probability

    def _consume(self, rule: FaultRule) -> FaultRule:
        rule.hits += 1
        self.fired += 1
        return rule
