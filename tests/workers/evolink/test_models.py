"""GenerationRequest: every allowed value accepted, every rule refused naming its field.

The whole table of bad requests lives here; each entry point (Python API, ingress, CLI,
a raw ``nbq.generate``) tests a few representative cases of its own refusal.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from nanobanana_queue.workers.evolink.models import (
    MAX_CALLBACK_URL_CHARS,
    MAX_IMAGE_URLS,
    MAX_PROMPT_CHARS,
    GenerationRequest,
    Quality,
    Size,
    ThinkingLevel,
)

CALLBACK_BASE = "https://hooks.example.com/"


def refused_field(**fields: Any) -> str:
    """Validate ``fields`` expecting failure; the dotted location of the first error."""
    with pytest.raises(ValidationError) as caught:
        GenerationRequest.model_validate({"prompt": "a cat", **fields})
    return ".".join(str(part) for part in caught.value.errors()[0]["loc"])


def test_minimal_request_gets_the_spec_defaults() -> None:
    request = GenerationRequest(prompt="a cat")

    assert request.to_api_json() == {
        "model": "nano-banana-2-beta",
        "prompt": "a cat",
        "size": "auto",
        "quality": "2K",
    }


@pytest.mark.parametrize("size", [s.value for s in Size])
def test_every_size_is_accepted(size: str) -> None:
    assert GenerationRequest.model_validate({"prompt": "p", "size": size}).size.value == size


@pytest.mark.parametrize("quality", [q.value for q in Quality])
def test_every_quality_is_accepted(quality: str) -> None:
    request = GenerationRequest.model_validate({"prompt": "p", "quality": quality})

    assert request.quality.value == quality


@pytest.mark.parametrize("level", [t.value for t in ThinkingLevel])
def test_every_thinking_level_is_accepted(level: str) -> None:
    request = GenerationRequest.model_validate(
        {"prompt": "p", "model_params": {"thinking_level": level}}
    )

    assert request.to_api_json()["model_params"] == {"thinking_level": level}


def test_size_count_matches_the_contract() -> None:
    assert len(Size) == 15


def test_full_request_serialises_every_field() -> None:
    request = GenerationRequest(
        prompt="x" * MAX_PROMPT_CHARS,
        size=Size.R21_9,
        quality=Quality.Q4K,
        image_urls=[f"https://img.example.com/{i}.png" for i in range(MAX_IMAGE_URLS)],
        model_params={"thinking_level": "high"},
        callback_url=CALLBACK_BASE + "c" * (MAX_CALLBACK_URL_CHARS - len(CALLBACK_BASE)),
    )

    body = request.to_api_json()

    assert len(body["image_urls"]) == 14
    assert len(body["callback_url"]) == 2048
    assert body["size"] == "21:9"
    assert body["quality"] == "4K"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   \n\t"}, "prompt"),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"size": "7:3"}, "size"),
        ({"size": "16x9"}, "size"),
        ({"quality": "8K"}, "quality"),
        ({"quality": "2k "}, "quality"),
        ({"model_params": {"thinking_level": "max"}}, "model_params.thinking_level"),
        ({"model_params": {"temperature": 1}}, "model_params.temperature"),
        ({"image_urls": [f"https://img.example.com/{i}.png" for i in range(15)]}, "image_urls"),
        ({"image_urls": ["file:///etc/passwd"]}, "image_urls"),
        ({"image_urls": ["http://127.0.0.1/x.png"]}, "image_urls"),
        ({"callback_url": "http://hooks.example.com/cb"}, "callback_url"),
        ({"callback_url": CALLBACK_BASE + "c" * MAX_CALLBACK_URL_CHARS}, "callback_url"),
        ({"model": "nano-banana-pro"}, "model"),
        ({"n": 2}, "n"),
    ],
)
def test_invalid_field_is_refused_naming_the_field(fields: dict[str, Any], field: str) -> None:
    assert refused_field(**fields) == field


def test_a_request_without_a_prompt_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError) as caught:
        GenerationRequest.model_validate({"size": "1:1"})
    assert [error["loc"] for error in caught.value.errors()] == [("prompt",)]


def test_callback_url_of_exactly_2049_chars_is_refused() -> None:
    url = CALLBACK_BASE + "c" * (MAX_CALLBACK_URL_CHARS + 1 - len(CALLBACK_BASE))
    assert len(url) == 2049

    assert refused_field(callback_url=url) == "callback_url"


def test_requests_are_immutable() -> None:
    request = GenerationRequest(prompt="a cat")

    with pytest.raises(ValidationError):
        request.prompt = "a dog"  # type: ignore[misc]


# --- property: anything either validates and round-trips, or is a ValidationError --------

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_junk = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_urls = st.sampled_from(
    [
        "https://img.example.com/a.png",
        "http://img.example.com/b.webp",
        "https://10.0.0.1/x",
        "ftp://x.example/y",
        "https://user:pw@x.example/y",
        "not a url",
        "https://[::1]/z",
        "http://[bad",
    ]
)
_fields: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from(["nano-banana-2-beta", "other"]) | _junk,
    "prompt": st.text(max_size=30) | st.text(min_size=1990, max_size=2010) | _junk,
    "size": st.sampled_from([s.value for s in Size] + ["3:1", ""]) | _junk,
    "quality": st.sampled_from([q.value for q in Quality] + ["1k"]) | _junk,
    "image_urls": st.none() | st.lists(_urls, max_size=16) | _junk,
    "model_params": st.none()
    | st.fixed_dictionaries(
        {},
        optional={
            "thinking_level": st.sampled_from(["auto", "min", "high", "low"]) | _junk,
            "other": _junk,
        },
    )
    | _junk,
    "callback_url": st.none()
    | st.sampled_from(["https://cb.example.com/x?t=1", "http://cb.example.com/x"])
    | _junk,
}
_requests = (
    st.fixed_dictionaries({}, optional=_fields)
    | st.fixed_dictionaries({}, optional={**_fields, "extra": _junk})
    | st.dictionaries(st.text(max_size=12), _junk, max_size=5)
)


@settings(max_examples=300, deadline=None)
@given(data=_requests)
def test_any_dict_validates_and_round_trips_or_raises_validation_error(
    data: dict[str, Any],
) -> None:
    try:
        request = GenerationRequest.model_validate(data)
    except ValidationError:
        return
    body = request.to_api_json()

    again = GenerationRequest.model_validate(body)

    assert again == request
    assert again.to_api_json() == body
    assert set(body) <= set(GenerationRequest.model_fields)
