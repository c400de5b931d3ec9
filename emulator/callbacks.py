"""Callback delivery as the spec describes it: POST the task object when it ends,
10 s timeout, up to 3 retries after 1/2/4 s (all scaled), 2xx = delivered.

Safety: the emulator only delivers to loopback hosts unless
``deliver_external_callbacks`` is set, so it never reaches out of the machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from nanobanana_queue.emulator import jsonio
from nanobanana_queue.emulator.config import EmulatorConfig
from nanobanana_queue.emulator.constants import (
    CALLBACK_MIN_TIMEOUT_S,
    CALLBACK_RETRY_DELAYS_S,
    CALLBACK_TIMEOUT_S,
)
from nanobanana_queue.emulator.faults import FaultBook
from nanobanana_queue.emulator.netguard import is_loopback_host
from nanobanana_queue.emulator.stats import Stats
from nanobanana_queue.emulator.tasks import CallbackAttempt, TaskRecord, TaskStore

_DROP = frozenset({"drop"})


@dataclass
class CallbackSender:
    """Schedules one delivery per finished task that has a ``callback_url``."""

    config: EmulatorConfig
    store: TaskStore
    faults: FaultBook
    stats: Stats
    clock: Callable[[], float] = time.time
    _client: httpx.AsyncClient | None = None
    _client_loop: asyncio.AbstractEventLoop | None = None
    _timers: set[asyncio.TimerHandle] = field(default_factory=set)
    _running: set[asyncio.Task[None]] = field(default_factory=set)

    def schedule(self, task: TaskRecord) -> None:
        """Deliver when the task finishes (call from inside the event loop)."""
        loop = asyncio.get_running_loop()
        task.callback_state = "scheduled"
        delay_s = max(0.0, task.finishes_at - self.clock())
        handle: asyncio.TimerHandle | None = None

        def start() -> None:
            if handle is not None:
                self._timers.discard(handle)
            running = loop.create_task(self.deliver(task))
            self._running.add(running)
            running.add_done_callback(self._running.discard)

        handle = loop.call_later(delay_s, start)
        self._timers.add(handle)

    async def deliver(self, task: TaskRecord) -> None:
        assert task.callback_url is not None
        delay_s = self.faults.delays("callback", task_id=task.id, prompt=task.prompt)
        if delay_s:
            await asyncio.sleep(delay_s)
        if self.faults.fire("callback", _DROP, task_id=task.id, prompt=task.prompt):
            self._finish(task, "dropped")
            return
        host = urlsplit(task.callback_url).hostname or ""
        if not self.config.deliver_external_callbacks and not is_loopback_host(host):
            self._finish(task, "skipped")
            return
        early_s = task.finishes_at - self.clock()
        if 0 < early_s < 1:  # loop timers may fire a little early; the wall clock rules
            await asyncio.sleep(early_s + 0.001)
        body = jsonio.dumps(self.store.view(task, max(self.clock(), task.finishes_at)))
        waits = (0.0, *(self.config.scaled(s) for s in CALLBACK_RETRY_DELAYS_S))
        for attempt, wait_s in enumerate(waits, start=1):
            if wait_s:
                await asyncio.sleep(wait_s)
            if await self._post(task, attempt, body):
                self._finish(task, "delivered")
                return
        self._finish(task, "failed")

    async def _post(self, task: TaskRecord, attempt: int, body: bytes) -> bool:
        assert task.callback_url is not None
        record = CallbackAttempt(attempt=attempt, at=self.clock())
        task.callback_attempts.append(record)
        self.stats.callbacks["sent"] += 1
        timeout_s = max(CALLBACK_MIN_TIMEOUT_S, self.config.scaled(CALLBACK_TIMEOUT_S))
        try:
            response = await self._http().post(
                task.callback_url,
                content=body,
                headers={"content-type": "application/json", "user-agent": "evolink-emulator"},
                timeout=timeout_s,
            )
        except httpx.HTTPError as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            return False
        record.status_code = response.status_code
        record.delivered = 200 <= response.status_code < 300
        return record.delivered

    def _finish(self, task: TaskRecord, outcome: str) -> None:
        task.callback_state = outcome
        self.stats.callbacks[outcome] += 1

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            # A client is bound to the loop it was made in (tests may run several loops).
            self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
            self._client_loop = loop
        return self._client

    def cancel_all(self) -> None:
        """Forget scheduled and running deliveries (reset, shutdown)."""
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        for running in list(self._running):
            running.cancel()

    async def aclose(self) -> None:
        self.cancel_all()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def describe(self, task: TaskRecord) -> list[dict[str, Any]]:
        return [vars(attempt).copy() for attempt in task.callback_attempts]
