"""Property: the emulator accepts a create body exactly when the vendor schema does."""

from __future__ import annotations

from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_schema_validator import OAS31Validator

from nanobanana_queue.emulator.constants import QUALITIES, SIZES, THINKING_LEVELS
from tests.emulator.conftest import AUTH, CREATE

MISSING = object()
_junk = st.one_of(st.none(), st.integers(), st.booleans(), st.lists(st.integers(), max_size=2))


def _field(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> st.SearchStrategy:
    return st.one_of(st.just(MISSING), valid, invalid)


bodies = st.fixed_dictionaries(
    {
        "model": _field(st.just("nano-banana-2-beta"), st.one_of(_junk, st.just("other"))),
        "prompt": _field(
            st.text(max_size=40), st.one_of(_junk, st.text(min_size=2001, max_size=2003))
        ),
        "size": _field(st.sampled_from(SIZES), st.one_of(_junk, st.sampled_from(["2:1", "1:1 "]))),
        "quality": _field(st.sampled_from(QUALITIES), st.one_of(_junk, st.just("8K"))),
        "image_urls": _field(
            st.lists(st.just("https://example.com/a.png"), max_size=14),
            st.one_of(
                _junk, st.lists(st.just("https://example.com/a.png"), min_size=15, max_size=16)
            ),
        ),
        "model_params": _field(
            st.one_of(
                st.just({}),
                st.fixed_dictionaries({"thinking_level": st.sampled_from(THINKING_LEVELS)}),
            ),
            st.one_of(_junk, st.just({"thinking_level": "max"})),
        ),
        "callback_url": _field(st.just("https://hooks.example.com/cb"), _junk),
        "extra": _field(st.integers(), st.nothing()),
    }
).map(lambda fields: {k: v for k, v in fields.items() if v is not MISSING})


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=bodies)
def test_emulator_accepts_exactly_what_the_spec_schema_accepts(client, spec, request):
    schema = {
        "$ref": "#/components/schemas/ImageGenerationRequest",
        "components": spec["components"],
    }
    try:
        OAS31Validator(schema).validate(request)
        spec_ok = True
    except jsonschema.ValidationError:
        spec_ok = False

    response = client.post(CREATE, json=request, headers=AUTH)

    assert response.status_code == (200 if spec_ok else 400), (request, response.text)
