"""All emulator options in one typed object (the CLI and tests build it)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field


class EmulatorConfig(BaseModel):
    """Options of one emulator instance.

    Durations are in seconds. Those the vendor defines (result TTL, fixed duration,
    ``retry_after`` of fault rules, callback delays) are *nominal*: the emulator
    multiplies them by ``time_scale``.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    #: Accepted bearer keys; empty means any non-empty key is accepted.
    api_keys: list[str] = Field(
        default_factory=list, validation_alias=AliasChoices("api_keys", "api_key")
    )
    #: Factor applied to every time the emulator reports or honours (0.01 = 100x faster).
    time_scale: float = Field(default=1.0, gt=0)
    #: Starting credit balance; ``None`` means unlimited.
    credits: float | None = Field(default=None, ge=0)
    #: Lifetime of result links in nominal seconds (scaled).
    result_ttl: float = Field(default=86400.0, gt=0)
    image_format: Literal["png", "jpeg", "webp"] = "png"
    #: Cap on result pixels (ratio kept), for fast tests; ``None`` = full size.
    max_pixels: int | None = Field(default=None, ge=1)
    #: Accept plain-http and loopback/private callback URLs (tests, local runs).
    allow_insecure_callbacks: bool = False
    #: Deliver callbacks to non-loopback hosts; off so the emulator never leaves the machine.
    deliver_external_callbacks: bool = False
    #: Seed of the duration, id and fault-probability generators; ``None`` = random.
    seed: int | None = None
    #: Every task takes exactly this many nominal seconds (scaled) instead of a random draw.
    fixed_duration: float | None = Field(default=None, ge=0)
    #: Base of result links when behind a proxy; default ``http://{host}:{port}``.
    public_url: str | None = None
    log_level: str = "warning"
    #: Largest accepted create body; larger answers 413.
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    #: Honour ``Idempotency-Key``. Off by default, as the vendor documents no such support:
    #: every create makes (and charges) a task. ``--honour-idempotency`` turns it on.
    honour_idempotency: bool = False
    #: Budget of the rendered-image LRU cache.
    image_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)

    @property
    def public_base_url(self) -> str:
        """Base of the links in ``results`` (no trailing slash)."""
        base = self.public_url or f"http://{self.host}:{self.port}"
        return base.rstrip("/")

    def scaled(self, nominal_s: float) -> float:
        """Real seconds for a nominal duration."""
        return nominal_s * self.time_scale
