"""The vendor's fixed values (spec and CONTRACT.md) and the emulator's nominal numbers.

Every duration here is *nominal* (full-scale) seconds; the emulator multiplies by
``EmulatorConfig.time_scale`` before using or reporting it.
"""

from __future__ import annotations

MODEL_NAME = "nano-banana-2-beta"
MAX_PROMPT_CHARS = 2000
MAX_IMAGE_URLS = 14
MAX_CALLBACK_URL_CHARS = 2048

SIZES = (
    "auto", "1:1", "1:4", "4:1", "1:8", "8:1", "2:3", "3:2",
    "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
)  # fmt: skip
QUALITIES = ("1K", "2K", "4K")
THINKING_LEVELS = ("auto", "min", "high")
DEFAULT_SIZE = "auto"
DEFAULT_QUALITY = "2K"

#: Nominal generation time in seconds by quality (the centre of the duration distribution).
BASE_ESTIMATE_S = {"1K": 20.0, "2K": 30.0, "4K": 60.0}
#: Multiplier on the estimate by ``model_params.thinking_level``.
THINKING_FACTOR = {"auto": 1.0, "min": 0.8, "high": 1.5}
#: Share of the generation time a task spends ``pending`` before ``processing``.
PENDING_SHARE = 0.1
#: Credits reserved (and charged) per task by quality.
CREDITS_BY_QUALITY = {"1K": 1.6, "2K": 2.5, "4K": 5.0}
#: Long side of the result image in pixels by quality (before ``max_pixels``).
LONG_SIDE_PX = {"1K": 1024, "2K": 2048, "4K": 4096}

#: Callback mechanism of the spec: timeout and the delays before the 3 retries.
CALLBACK_TIMEOUT_S = 10.0
CALLBACK_RETRY_DELAYS_S = (1.0, 2.0, 4.0)
#: A scaled callback timeout never drops below this many real seconds (loopback jitter).
CALLBACK_MIN_TIMEOUT_S = 1.0

#: Error ``type`` by HTTP status (CONTRACT.md table).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "internal_server_error",
    502: "upstream_error",
    503: "service_unavailable",
}
#: Default error ``code`` by HTTP status when a fault rule gives none.
ERROR_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    402: "insufficient_quota",
    403: "model_access_denied",
    404: "not_found",
    413: "request_too_large",
    429: "rate_limit_exceeded",
    500: "internal_error",
    502: "upstream_error",
    503: "service_unavailable",
}
ERROR_MESSAGES = {
    400: "Invalid request parameters",
    401: "Invalid or expired token",
    402: "Insufficient quota. Please top up your account.",
    403: "Token does not have access to model: nano-banana-2-beta",
    404: "Resource not found",
    413: "Request body too large",
    429: "Too many requests, please try again later",
    500: "Internal server error",
    502: "Upstream service error",
    503: "Service temporarily unavailable",
}

#: Task error codes of CONTRACT.md section 2 (a ``fail_task`` fault may use any string).
TASK_ERROR_CODES = (
    "content_policy_violation", "invalid_parameters", "image_dimension_mismatch",
    "image_processing_error", "request_cancelled", "resource_not_found", "model_unavailable",
    "generation_timeout", "quota_exceeded", "resource_exhausted",
    "generation_failed_no_content", "service_error", "service_unavailable", "upstream_error",
    "unknown_error",
)  # fmt: skip
DEFAULT_TASK_ERROR_CODE = "generation_failed_no_content"
