"""The emulator's whole in-memory state and the domain steps on it (create, charge, reset).

One instance per app; everything runs on one event loop, and no step awaits between a
check and its update, so concurrent requests cannot interleave inside a step.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from nanobanana_queue.emulator.callbacks import CallbackSender
from nanobanana_queue.emulator.config import EmulatorConfig
from nanobanana_queue.emulator.constants import CREDITS_BY_QUALITY, DEFAULT_TASK_ERROR_CODE
from nanobanana_queue.emulator.faults import FaultBook, FaultRule
from nanobanana_queue.emulator.images import ImageCache, pixel_size
from nanobanana_queue.emulator.links import LinkSigner
from nanobanana_queue.emulator.replies import EmulatedApiError
from nanobanana_queue.emulator.stats import Stats
from nanobanana_queue.emulator.tasks import TaskRecord, TaskStore
from nanobanana_queue.emulator.timing import DurationModel, pending_until
from nanobanana_queue.emulator.validation import CreateRequest


@dataclass
class EmulatorState:
    config: EmulatorConfig
    clock: Callable[[], float]
    durations: DurationModel
    store: TaskStore
    faults: FaultBook
    stats: Stats
    images: ImageCache
    callbacks: CallbackSender
    credits: float | None
    honour_idempotency: bool

    @classmethod
    def build(
        cls, config: EmulatorConfig, clock: Callable[[], float] | None = None
    ) -> EmulatorState:
        now = clock or time.time
        seed = config.seed
        # Separate generators: adding a fault rule must not change the durations drawn.
        durations = DurationModel(config.time_scale, random.Random(seed), config.fixed_duration)
        signer = LinkSigner(config.public_base_url, config.image_format)
        store = TaskStore(signer, random.Random(None if seed is None else seed + 1))
        faults = FaultBook(random.Random(None if seed is None else seed + 2))
        stats = Stats()
        return cls(
            config=config,
            clock=now,
            durations=durations,
            store=store,
            faults=faults,
            stats=stats,
            images=ImageCache(config.image_cache_bytes),
            callbacks=CallbackSender(config, store, faults, stats, now),
            credits=config.credits,
            honour_idempotency=config.honour_idempotency,
        )

    def charge(self, quality: str) -> float:
        """Reserve the task's credits or answer 402 when the balance is short."""
        cost = CREDITS_BY_QUALITY[quality]
        if self.credits is not None:
            if self.credits + 1e-9 < cost:
                raise EmulatedApiError(
                    402,
                    f"Insufficient quota: {cost} credits needed, {self.credits:g} left. "
                    "Please top up your account.",
                    code="insufficient_quota",
                )
            self.credits = round(self.credits - cost, 6)
        self.stats.credits_charged += cost
        return cost

    def create_task(
        self,
        request: CreateRequest,
        *,
        api_key: str,
        idempotency_key: str | None,
        cost: float,
        fail: FaultRule | None,
    ) -> TaskRecord:
        now = self.clock()
        created = int(now)
        nominal_s = self.durations.draw_nominal_s(request.quality, request.thinking_level)
        duration_s = self.config.scaled(nominal_s)
        finishes_at = now + duration_s
        task = TaskRecord(
            id=self.store.new_id(created),
            created=created,
            created_at=now,
            started_at=pending_until(now, duration_s),
            finishes_at=finishes_at,
            duration_s=duration_s,
            duration_nominal_s=nominal_s,
            estimated_time=self.durations.estimated_time(request.quality, request.thinking_level),
            estimated_time_exact=self.durations.scaled_estimate_s(
                request.quality, request.thinking_level
            ),
            prompt=request.prompt,
            size=request.size,
            quality=request.quality,
            thinking_level=request.thinking_level,
            credits_reserved=cost,
            expires_at=finishes_at + self.config.scaled(self.config.result_ttl),
            idempotency_key=idempotency_key,
            callback_url=request.callback_url,
        )
        if fail is not None:
            task.fail_code = fail.code or DEFAULT_TASK_ERROR_CODE
            task.fail_message = fail.message
        self.store.add(task, api_key)
        self.stats.creates_accepted += 1
        self.stats.charges_by_task[task.id] = cost
        if idempotency_key is not None:
            self.stats.creates_by_idempotency_key[idempotency_key] += 1
            charges = self.stats.charges_by_idempotency_key
            charges[idempotency_key] = charges.get(idempotency_key, 0.0) + cost
        if task.callback_url is not None:
            self.callbacks.schedule(task)
        return task

    def image_dimensions(self, task: TaskRecord) -> tuple[int, int]:
        return pixel_size(task.size, task.quality, self.config.max_pixels)

    def tasks_by_status(self) -> dict[str, int]:
        now = self.clock()
        counts: dict[str, int] = {}
        for task in self.store.tasks.values():
            status = task.status_at(now)[0]
            counts[status] = counts.get(status, 0) + 1
        return counts

    def reset(self) -> None:
        """Forget tasks, faults, counters and cached files; credits back to the start."""
        self.callbacks.cancel_all()
        self.store.clear()
        self.faults.clear()
        self.images.clear()
        fresh = Stats()
        self.stats.__dict__.update(fresh.__dict__)
        self.credits = self.config.credits
        self.honour_idempotency = self.config.honour_idempotency
