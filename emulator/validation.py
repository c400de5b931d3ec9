"""Validation of the create body, field by field, exactly as the vendor spec says.

Hand-written rather than jsonschema: this is the hot path, and each failure must name
its field. Unknown top-level fields are allowed and ignored (the spec does not forbid
them); ``prompt`` has only a maximum length in the spec, so an empty prompt passes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from nanobanana_queue.emulator.constants import (
    DEFAULT_QUALITY,
    DEFAULT_SIZE,
    MAX_CALLBACK_URL_CHARS,
    MAX_IMAGE_URLS,
    MAX_PROMPT_CHARS,
    MODEL_NAME,
    QUALITIES,
    SIZES,
    THINKING_LEVELS,
)
from nanobanana_queue.emulator.netguard import is_internal_host
from nanobanana_queue.emulator.replies import EmulatedApiError, invalid

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
_BAD_URI_CHARS = re.compile(r"[\s<>\"{}|\\^`\x00-\x1f\x7f]")
_SIZES = frozenset(SIZES)
_QUALITIES = frozenset(QUALITIES)
_THINKING = frozenset(THINKING_LEVELS)


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A create body that passed validation, defaults filled in."""

    prompt: str
    size: str
    quality: str
    thinking_level: str
    image_urls: tuple[str, ...]
    callback_url: str | None


def validate_create(body: Any, *, allow_insecure_callbacks: bool) -> CreateRequest:
    """Check every field; raise a 400 :class:`EmulatedApiError` naming the first bad one."""
    if not isinstance(body, dict):
        raise EmulatedApiError(400, "Request body must be a JSON object")
    model = _required_str(body, "model")
    if model != MODEL_NAME:
        raise invalid("model", f"must be '{MODEL_NAME}'")
    prompt = _required_str(body, "prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise invalid("prompt", f"must be at most {MAX_PROMPT_CHARS} characters")
    size = _enum(body, "size", _SIZES, SIZES, DEFAULT_SIZE)
    quality = _enum(body, "quality", _QUALITIES, QUALITIES, DEFAULT_QUALITY)
    return CreateRequest(
        prompt=prompt,
        size=size,
        quality=quality,
        thinking_level=_thinking_level(body),
        image_urls=_image_urls(body),
        callback_url=_callback_url(body, allow_insecure_callbacks),
    )


def _required_str(body: dict[str, Any], field: str) -> str:
    if field not in body:
        raise invalid(field, "is required")
    value = body[field]
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    return value


def _enum(
    body: dict[str, Any], field: str, allowed: frozenset[str], order: tuple[str, ...], default: str
) -> str:
    if field not in body:
        return default
    value = body[field]
    if not isinstance(value, str) or value not in allowed:
        raise invalid(field, f"must be one of {', '.join(order)}")
    return value


def _thinking_level(body: dict[str, Any]) -> str:
    if "model_params" not in body:
        return "auto"
    params = body["model_params"]
    if not isinstance(params, dict):
        raise invalid("model_params", "must be an object")
    if "thinking_level" not in params:
        return "auto"
    level = params["thinking_level"]
    if not isinstance(level, str) or level not in _THINKING:
        raise invalid("model_params.thinking_level", f"must be one of {', '.join(THINKING_LEVELS)}")
    return level


def _image_urls(body: dict[str, Any]) -> tuple[str, ...]:
    if "image_urls" not in body:
        return ()
    urls = body["image_urls"]
    if not isinstance(urls, list):
        raise invalid("image_urls", "must be an array of URLs")
    if len(urls) > MAX_IMAGE_URLS:
        raise invalid("image_urls", f"must contain at most {MAX_IMAGE_URLS} items")
    for index, url in enumerate(urls):
        if not isinstance(url, str) or not is_uri(url):
            raise invalid(f"image_urls[{index}]", "must be a URI string")
    return tuple(urls)


def _callback_url(body: dict[str, Any], allow_insecure: bool) -> str | None:
    if "callback_url" not in body:
        return None
    url = body["callback_url"]
    if not isinstance(url, str) or not is_uri(url):
        raise invalid("callback_url", "must be a URI string")
    if len(url) > MAX_CALLBACK_URL_CHARS:
        raise invalid("callback_url", f"must be at most {MAX_CALLBACK_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise invalid("callback_url", "must be a valid URL") from None
    if parts.scheme.lower() not in ("https", "http") or not parts.hostname:
        raise invalid("callback_url", "must be an https:// URL with a host")
    if allow_insecure:
        return url
    if parts.scheme.lower() != "https":
        raise invalid("callback_url", "only the HTTPS protocol is supported")
    if is_internal_host(parts.hostname):
        raise invalid("callback_url", "callbacks to internal IP addresses are prohibited")
    return url


def is_uri(value: str) -> bool:
    """RFC 3986 absolute URI, roughly: a scheme, no spaces or forbidden characters."""
    if not value or _BAD_URI_CHARS.search(value):
        return False
    scheme, sep, rest = value.partition(":")
    return bool(sep and rest and _SCHEME.match(scheme))
