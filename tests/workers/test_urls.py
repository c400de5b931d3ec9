"""A URL printed or logged never shows its password (nor a query that may hold another)."""

from __future__ import annotations

import pytest

from nanobanana_queue.workers.urls import masked_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:6380/1", "redis://:***@host:6380/1"),
        ("redis://user:pw@host/0", "redis://user:***@host/0"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("rediss://:pw@host:6380/0?ssl_ca_certs=/ca.pem#x", "rediss://:***@host:6380/0"),
        ("redis://:pw@host:notaport/0", "<unparsable url>"),
    ],
)
def test_only_the_password_is_hidden(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def test_the_dev_stack_shows_its_own_mask() -> None:
    assert masked_url("redis://:hunter2@cache:6380/1", mask="<password>") == (
        "redis://:<password>@cache:6380/1"
    )
