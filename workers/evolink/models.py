"""Request and task models: the one definition of the API's rules.

Producers validate with :class:`GenerationRequest` before anything is enqueued, and the
client sends exactly what it serialises, so a request that passes here is one the API
accepts. :class:`Task` is tolerant: unknown fields are kept, and results may come as
``results`` or ``result_data[].image_url``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MODEL_NAME = "nano-banana-2-beta"
MAX_PROMPT_CHARS = 2000
MAX_IMAGE_URLS = 14
MAX_CALLBACK_URL_CHARS = 2048


class Size(StrEnum):
    """Aspect ratio of the result; ``auto`` lets the model choose (the emulator uses 1:1)."""

    AUTO = "auto"
    R1_1 = "1:1"
    R1_4 = "1:4"
    R4_1 = "4:1"
    R1_8 = "1:8"
    R8_1 = "8:1"
    R2_3 = "2:3"
    R3_2 = "3:2"
    R3_4 = "3:4"
    R4_3 = "4:3"
    R4_5 = "4:5"
    R5_4 = "5:4"
    R9_16 = "9:16"
    R16_9 = "16:9"
    R21_9 = "21:9"

    def ratio(self) -> tuple[int, int]:
        """Width:height as integers; ``auto`` counts as 1:1."""
        if self is Size.AUTO:
            return (1, 1)
        width, height = self.value.split(":")
        return (int(width), int(height))


class Quality(StrEnum):
    """Resolution tier; the price rises with it."""

    Q1K = "1K"
    Q2K = "2K"
    Q4K = "4K"


class ThinkingLevel(StrEnum):
    """How long the model reasons before drawing; ``high`` is slower."""

    AUTO = "auto"
    MIN = "min"
    HIGH = "high"


class ModelParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    thinking_level: ThinkingLevel | None = None


class GenerationRequest(BaseModel):
    """``POST /v1/images/generations`` body, validated exactly as the vendor spec says."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model: Literal["nano-banana-2-beta"] = "nano-banana-2-beta"
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    size: Size = Size.AUTO
    quality: Quality = Quality.Q2K
    image_urls: list[str] | None = Field(default=None, max_length=MAX_IMAGE_URLS)
    model_params: ModelParams | None = None
    callback_url: str | None = Field(default=None, max_length=MAX_CALLBACK_URL_CHARS)

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be blank")
        return value

    @field_validator("image_urls")
    @classmethod
    def _image_urls_safe(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        from nanobanana_queue.workers.security.urlguard import check_reference_url

        for url in value:
            check_reference_url(url)
        return value

    @field_validator("callback_url")
    @classmethod
    def _callback_https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("callback_url must be an https:// URL")
        return value

    def to_api_json(self) -> dict[str, Any]:
        """The JSON body sent to the API (unset optional fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)


class TaskStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class TaskInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    can_cancel: bool | None = None
    estimated_time: float | None = None


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")

    billing_rule: str | None = None
    credits_reserved: float | None = None
    user_group: str | None = None


class TaskError(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str = "unknown_error"
    message: str = ""

    @field_validator("code", mode="before")
    @classmethod
    def _code_as_string(cls, value: Any) -> str:
        return "unknown_error" if value is None else str(value)


class ResultItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    image_url: str | None = None


class Task(BaseModel):
    """The task object of create, query and callback bodies."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    id: str
    status: TaskStatus = TaskStatus.PENDING
    progress: int = 0
    created: int | None = None
    model: str | None = None
    object: str | None = None
    type: str | None = None
    task_info: TaskInfo = Field(default_factory=TaskInfo)
    usage: Usage = Field(default_factory=Usage)
    results: list[str] | None = None
    result_data: list[ResultItem] | None = None
    error: TaskError | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _status_lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @property
    def result_urls(self) -> list[str]:
        """Result links from ``results`` or, failing that, ``result_data[].image_url``."""
        if self.results:
            return list(self.results)
        return [item.image_url for item in self.result_data or [] if item.image_url]

    @property
    def estimated_time_s(self) -> float | None:
        return self.task_info.estimated_time
