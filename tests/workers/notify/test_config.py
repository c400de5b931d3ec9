"""Who may ask for a webhook: secrets per producer, default URLs, the SSRF guard."""

from __future__ import annotations

import pytest

from nanobanana_queue.workers.notify.config import (
    NotifyConfig,
    NotifyRefusedError,
    own_callback_refusal,
)
from nanobanana_queue.workers.settings import load_settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _config(**values: object) -> NotifyConfig:
    return NotifyConfig.from_settings(load_settings(evolink_api_key="k", **values))


def test_secrets_are_per_producer_and_an_empty_name_signs_producer_less_jobs() -> None:
    config = _config(notify_secrets=f"shop:{SECRET}, :{SECRET}")
    assert config.secret_for("shop") == SECRET and config.secret_for(None) == SECRET
    assert config.secret_for("other") is None
    assert config.check(None, "https://hooks.example.com/x")
    with pytest.raises(NotifyRefusedError, match="add other:whsec_"):
        config.check("other", "https://hooks.example.com/x")


def test_a_secret_that_is_not_whsec_and_a_default_url_without_a_secret_are_config_errors() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        _config(notify_secrets="shop:plain")
    with pytest.raises(NotifyRefusedError, match="no webhook secret"):
        _config(notify_secrets=f"shop:{SECRET}", notify_urls="bob:https://b.example.com/h")


def test_a_producers_default_url_applies_unless_the_job_has_its_own() -> None:
    config = _config(notify_secrets=f"shop:{SECRET}", notify_urls="shop:https://s.example.com/h")
    assert config.url_for("shop", None) == "https://s.example.com/h"
    assert config.url_for("shop", "https://own.example.com/") == "https://own.example.com/"
    assert config.url_for("bob", None) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",
        "https://127.0.0.1/x",
        "https://user:pw@example.com/",
        "https://169.254.169.254/",
        "https://printer.local/",
        "x" * 3000,
    ],
)
def test_unsafe_urls_are_refused(url: str) -> None:
    with pytest.raises(NotifyRefusedError):
        _config(notify_secrets=f"shop:{SECRET}").check("shop", url)


def test_loopback_only_when_listed_and_http_only_when_allowed() -> None:
    config = _config(
        notify_secrets=f"shop:{SECRET}", notify_private_hosts="127.0.0.1", notify_allow_http=True
    )
    assert config.check("shop", "http://127.0.0.1:8080/h")


def test_an_own_callback_url_is_refused_only_while_project_callbacks_are_on() -> None:
    request = {"prompt": "x", "callback_url": "https://mine.example.com/cb"}
    off = load_settings(evolink_api_key="k")
    on = load_settings(
        evolink_api_key="k", public_callback_url="https://in.example.com", callback_secret="s"
    )
    assert own_callback_refusal(off, request) is None
    assert "use notify_url" in (own_callback_refusal(on, request) or "")
